"""Tests for relaybot.inference.remote.scheduling: a batch's requests side by side, continuously."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from relaybot.inference.engine import EngineError, GenerationRequest, SamplingParams
from tests.support.remote_server import Handler, Seen, completion, numbered, openai, slow_echo


def test_one_failure_fails_the_batch_with_its_message(serve: Any) -> None:
    def picky(handler: Handler, seen: Seen) -> None:
        if "n1" in seen.body["prompt"]:
            handler.send_json(400, {"detail": "bad n1"})
        else:
            handler.send_json(200, completion("ok"))

    server = serve(picky)
    with pytest.raises(EngineError) as caught:
        openai(server.url).generate(numbered(3))
    assert str(caught.value) == (
        f"remote server {server.url} rejected the request: HTTP 400: bad n1"
        " (1 of 3 requests failed)"
    )


class Feed:
    """Hands `arrivals` to a running batch at its first admit call; drops given indices."""

    def __init__(self, arrivals: list[GenerationRequest], drop: set[int] | None = None) -> None:
        self.arrivals = arrivals
        self.drop = drop or set()
        self.free_seen: list[int] = []

    def admit(self, free: int, params: SamplingParams) -> list[GenerationRequest]:
        self.free_seen.append(free)
        taken, self.arrivals = self.arrivals[:free], self.arrivals[free:]
        return taken

    def dropped(self, index: int) -> bool:
        return index in self.drop


def held_until_released(held: str) -> Callable[[Handler, Seen], None]:
    """Echoes the prompt's last line, but holds the answer to `held` until the server's
    release event (so the test controls which reply is out longest)."""

    def respond(handler: Handler, seen: Seen) -> None:
        word = seen.body["prompt"].split("\n")[-3]
        if word.startswith(held):
            handler.server.release.wait(10)
        handler.send_json(200, completion(word))

    return respond


def test_a_request_admitted_mid_batch_is_answered_while_an_earlier_one_is_out(
    serve: Any,
) -> None:
    server = serve(held_until_released("n0"))
    engine = openai(server.url)
    order: list[tuple[int, str]] = []

    def done(index: int, text: str, cut: bool = False) -> None:
        order.append((index, text))
        if index == 1:
            server.release.set()  # only now may the first reply come back

    engine.generate_continuous(numbered(1), done, Feed(numbered(1, start=1)), max_rows=4)
    assert order == [(1, "n1"), (0, "n0")]


def test_one_failed_request_does_not_lose_the_others_replies(serve: Any) -> None:
    def picky(handler: Handler, seen: Seen) -> None:
        if "n1" in seen.body["prompt"]:
            handler.send_json(400, {"detail": "bad n1"})
        else:
            handler.send_json(200, completion("ok"))

    server = serve(picky)
    reported: dict[int, str] = {}
    with pytest.raises(EngineError, match=r"bad n1 \(1 of 3 requests failed\)"):
        openai(server.url).generate_continuous(numbered(3), record_into(reported), None)
    assert reported == {0: "ok", 2: "ok"}


def test_a_dropped_request_is_not_reported(serve: Any) -> None:
    server = serve(slow_echo)
    reported: dict[int, str] = {}
    engine = openai(server.url)
    engine.generate_continuous(numbered(2), record_into(reported), Feed([], drop={1}))
    assert reported == {0: "n0"}
    assert len(server.posts()) == 2


def record_into(reported: dict[int, str]) -> Callable[..., None]:
    """An engine's `done` callback that keeps each request's text by index."""

    def done(index: int, text: str, cut: bool = False) -> None:
        reported[index] = text

    return done
