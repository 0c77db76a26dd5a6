"""Tests for relaybot.inference.remote.tgi against a scripted server (no real TGI runs here)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from relaybot.conversation.formats import Prompt, Segment
from relaybot.inference.remote.prompt import Neutralizer, flatten
from relaybot.inference.remote.responses import Fetched
from tests.support.remote_server import Handler, Seen, relay_prompt, request, tgi


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"temperature": 0.3, "seed": 5},
            {
                "do_sample": True,
                "temperature": 0.3,
                "top_k": 40,
                "top_p": 0.95,
                "repetition_penalty": 1.1,
                "seed": 5,
            },
        ),
        # TGI refuses temperature 0 and samples as soon as top_k/top_p appear: greedy is bare.
        ({"temperature": 0.0}, {"do_sample": False, "repetition_penalty": 1.1}),
        # top_p must be below 1.0, top_k above 0; a penalty of 1.0 is no penalty.
        (
            {"top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0},
            {"do_sample": True, "temperature": 0.3},
        ),
    ],
)
def test_tgi_request_mapping(serve: Any, params: dict[str, Any], expected: dict[str, Any]) -> None:
    server = serve(lambda handler, seen: handler.send_json(200, {"generated_text": " ok "}))
    assert tgi(server.url).generate([request(max_new_tokens=32, **params)]) == ["ok"]
    [seen] = server.posts()
    assert seen.path == "/generate"
    assert seen.body["inputs"] == flatten(relay_prompt(), Neutralizer())
    assert seen.body["parameters"] == {
        "max_new_tokens": 32,
        "return_full_text": False,
        "details": True,
        "stop": ["<|im_end|>", "<|im_start|>"],
        **expected,
    }


def test_tgi_answer_as_a_list_and_at_most_four_stops(serve: Any) -> None:
    server = serve(lambda h, s: h.send_json(200, [{"generated_text": "a\nb STOP5 c"}]))
    prompt = Prompt((Segment("x"),), stop=("S1", "S2", "S3", "S4", "STOP5"))
    assert tgi(server.url).generate([request(prompt)]) == ["a\nb"]
    assert server.posts()[0].body["parameters"]["stop"] == ["S1", "S2", "S3", "S4"]


# --- streaming ----------------------------------------------------------------------------


def test_tgi_streaming_skips_special_tokens_and_stops_early(serve: Any) -> None:
    def stream(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        for text, special in (("Hi", False), (" there", False), ("<|im_end|>", True)):
            handler.event({"token": {"id": 1, "text": text, "special": special}})
        handler.event({"token": {"text": " ok\n<|im_start|>x", "special": False}})
        handler.server.release.wait(5)

    server = serve(stream)
    started = time.monotonic()
    assert tgi(server.url, stream=True).generate([request()]) == ["Hi there ok"]
    assert time.monotonic() - started < 2.0
    assert server.posts()[0].path == "/generate_stream"


def test_tgi_streaming_uses_the_final_text(serve: Any) -> None:
    def stream(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        handler.event({"token": {"text": "Hi", "special": False}, "generated_text": None})
        handler.event({"token": {"text": "!", "special": False}, "generated_text": "Hi!"})

    server = serve(stream)
    assert tgi(server.url, stream=True).generate([request()]) == ["Hi!"]


@pytest.mark.parametrize(
    ("details", "cut"),
    [({"finish_reason": "length"}, True), ({"finish_reason": "eos_token"}, False), (None, False)],
)
@pytest.mark.parametrize("stream", [False, True])
def test_tgi_says_when_the_token_limit_ended_the_answer(
    serve: Any, details: dict[str, Any] | None, cut: bool, stream: bool
) -> None:
    final = {"generated_text": "Hi there", **({"details": details} if details else {})}

    def answer(handler: Handler, seen: Seen) -> None:
        if stream:
            handler.start_events()
            handler.event({"token": {"text": "Hi there", "special": False}, **final})
        else:
            handler.send_json(200, final)

    server = serve(answer)
    assert tgi(server.url, stream=stream).complete(request()) == Fetched("Hi there", cut)
