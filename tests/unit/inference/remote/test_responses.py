"""Tests for relaybot.inference.remote.responses: reading streamed answers (SSE) to the end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relaybot.inference.engine import EngineError
from tests.support.remote_server import Handler, Script, Seen, chunk, openai, request


def test_a_stream_cut_short_is_retried_then_reported(serve: Any) -> None:
    def cut(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        handler.event(chunk("partial"))

    def whole(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        handler.event(chunk("whole", "stop"))

    server = serve(Script([cut, whole]))
    assert openai(server.url, stream=True).generate([request()]) == ["whole"]
    server2 = serve(cut)
    with pytest.raises(EngineError, match="ended before the answer was complete"):
        openai(server2.url, stream=True, retries=1).generate([request()])
    assert len(server2.posts()) == 2


def test_an_error_inside_the_stream_is_reported_without_retry(serve: Any) -> None:
    def failing(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        handler.event(chunk("a"))
        handler.event({"error": "generation exploded"})

    server = serve(failing)
    with pytest.raises(EngineError, match="stream reported an error: generation exploded"):
        openai(server.url, stream=True).generate([request()])
    assert len(server.posts()) == 1


@pytest.mark.parametrize("eol", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_streams_with_crlf_or_cr_line_endings_are_read(serve: Any, eol: str) -> None:
    """The SSE spec lets CRLF, LF or a lone CR end a line."""
    first = json.dumps(chunk(" one"), indent=1).split("\n")  # one event, many data lines
    lines = [
        ": a comment",
        "event: message",
        "",
        *(f"data: {line}" for line in first),
        "",
        "data: " + json.dumps(chunk(" two")),
        "",
        "data: [DONE]",
        "",
    ]
    raw = (eol.join(lines) + eol).encode()

    def stream(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        # In small pieces, so that line endings are split between writes.
        for start in range(0, len(raw), 5):
            handler.wfile.write(raw[start : start + 5])
            handler.wfile.flush()

    server = serve(stream)
    assert openai(server.url, stream=True, retries=0).generate([request()]) == ["one two"]
    assert len(server.posts()) == 1
