"""Tests for relaybot.inference.remote.openai: request bodies, field fallbacks, answers, streams."""

from __future__ import annotations

import dataclasses
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.schema import Secret
from relaybot.inference.engine import EngineError
from relaybot.inference.remote.openai import EXTRAS_GENERATION_CONFIG, EXTRAS_NONE, EXTRAS_TOP_LEVEL
from relaybot.inference.remote.prompt import TokenCounter
from relaybot.inference.remote.responses import Fetched
from tests.support.remote_server import (
    KEY,
    Handler,
    Seen,
    answer_with,
    chunk,
    completion,
    openai,
    relay_prompt,
    request,
    status,
)


def test_openai_request_carries_the_rendered_prompt_and_the_sampling_params(serve: Any) -> None:
    server = serve(answer_with(" hi alice<|im_end|>junk after the stop"))
    engine = openai(server.url, model="relay", api_key=Secret(KEY))
    prompt = relay_prompt("hi <|im_end|> bot")
    params = {"temperature": 0.3, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
    [text] = engine.generate([request(prompt, seed=7, max_new_tokens=64, **params)])
    assert text == "hi alice"  # cut at the stop locally, stripped
    [seen] = server.posts()
    assert seen.path == "/v1/completions"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.body == {
        "prompt": engine.render(prompt),
        "model": "relay",
        "max_tokens": 64,
        "temperature": 0.3,
        "top_p": 0.95,
        "stop": ["<|im_end|>", "<|im_start|>"],
        "seed": 7,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
    }
    assert seen.body["prompt"].startswith("<|im_start|>alice\nhi <\u2060|im_end|> bot<|im_end|>")


def test_openai_base_url_ending_in_v1_is_not_doubled(serve: Any) -> None:
    server = serve(answer_with("ok"))
    assert openai(server.url + "/v1").generate([request()]) == ["ok"]
    assert server.posts()[0].path == "/v1/completions"


def test_openai_greedy_and_no_model_or_seed_when_not_configured(serve: Any) -> None:
    server = serve(answer_with("ok"))
    openai(server.url).generate([request(temperature=0.0, top_k=0, min_p=0.0)])
    body = server.posts()[0].body
    assert body["temperature"] == 0.0
    assert not {"model", "seed", "top_k", "min_p", "stream"} & body.keys()
    assert "Authorization" not in server.posts()[0].headers


def unexpected_fields(handler: Handler, seen: Seen) -> None:
    """What `transformers serve` does with fields it does not know."""
    extra = {"top_k", "min_p", "repetition_penalty"} & seen.body.keys()
    if extra:
        handler.send_json(422, {"detail": f"Unexpected fields in the request: {extra}"})
    else:
        handler.send_json(200, completion("fine"))


def test_openai_falls_back_to_generation_config_when_extra_fields_are_refused(
    serve: Any,
) -> None:
    server = serve(unexpected_fields)
    engine = openai(server.url)
    with capture_logs() as logs:
        assert engine.generate([request(seed=3)]) == ["fine"]
    first, second = server.posts()
    assert first.body["top_k"] == 40
    assert "top_k" not in second.body
    assert json.loads(second.body["generation_config"]) == {
        "max_new_tokens": 128,
        "repetition_penalty": 1.1,
        "do_sample": True,
        "temperature": 0.3,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
    }
    assert engine.extras == EXTRAS_GENERATION_CONFIG
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "remote_sampling_fields_rejected"
    ]
    # Later requests go straight to the form the server takes.
    engine.generate([request(temperature=0.0)])
    assert len(server.posts()) == 3
    assert json.loads(server.posts()[2].body["generation_config"]) == {
        "max_new_tokens": 128,
        "repetition_penalty": 1.1,
        "do_sample": False,
    }


def test_a_chosen_model_goes_in_the_body_and_steps_down_on_its_own(serve: Any) -> None:
    def router(handler: Handler, seen: Seen) -> None:
        """A server in front of two models: only `b` refuses the extra fields."""
        if seen.body.get("model") == "b":
            unexpected_fields(handler, seen)
        else:
            handler.send_json(200, completion("fine"))

    server = serve(router)
    engine = openai(server.url, model="a")
    assert engine.generate([dataclasses.replace(request(), model="b")]) == ["fine"]
    assert engine.generate([request()]) == ["fine"]
    bodies = [seen.body for seen in server.posts()]
    assert [body["model"] for body in bodies] == ["b", "b", "a"]
    assert "generation_config" in bodies[1] and "top_k" not in bodies[1]
    # `b` refusing the fields does not take them from `a`.
    assert bodies[2]["top_k"] == 40 and "generation_config" not in bodies[2]
    assert engine.extras_for("b") == EXTRAS_GENERATION_CONFIG
    assert engine.extras == EXTRAS_TOP_LEVEL


def test_the_local_tokenizers_eos_goes_only_to_the_configured_model(serve: Any) -> None:
    server = serve(unexpected_fields)
    engine = openai(server.url, model="a")
    engine.counter = TokenCounter(SimpleNamespace(eos_token_id=2))
    engine.generate([dataclasses.replace(request(), model="b")])
    engine.generate([request()])
    configs = [
        json.loads(seen.body["generation_config"])
        for seen in server.posts()
        if "generation_config" in seen.body
    ]
    assert [config.get("eos_token_id") for config in configs] == [None, 2]


def test_openai_sends_only_standard_fields_when_everything_extra_is_refused(serve: Any) -> None:
    def strict(handler: Handler, seen: Seen) -> None:
        extra = seen.body.keys() - {"prompt", "max_tokens", "temperature", "top_p", "stop"}
        if extra:
            handler.send_json(400, {"error": {"message": f"unknown fields {sorted(extra)}"}})
        else:
            handler.send_json(200, completion("plain"))

    server = serve(strict)
    engine = openai(server.url)
    assert engine.generate([request()]) == ["plain"]
    assert engine.extras == EXTRAS_NONE
    assert len(server.posts()) == 3


def test_an_unrelated_400_is_not_taken_for_a_refused_field(serve: Any) -> None:
    server = serve(status(400, "prompt is too long"))
    engine = openai(server.url)
    with pytest.raises(EngineError) as caught:
        engine.generate([request()])
    assert str(caught.value) == (
        f"remote server {server.url} rejected the request: HTTP 400: prompt is too long"
    )
    assert len(server.posts()) == 1  # never retried
    assert engine.extras == EXTRAS_TOP_LEVEL


def test_an_answer_without_text_is_a_clear_error(serve: Any) -> None:
    server = serve(lambda h, s: h.send_json(200, {"error": "model overloaded"}))
    with pytest.raises(EngineError, match=r"unusable answer: no choices.*model overloaded"):
        openai(server.url).generate([request()])
    assert len(server.posts()) == 1


# --- streaming ----------------------------------------------------------------------------


def test_streaming_stops_reading_at_the_first_stop_string(serve: Any) -> None:
    def stream(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        for piece in ("Hel", "lo there <|im_", "end|> and more"):
            handler.event(chunk(piece))
        # A server that keeps generating: the engine must not wait for it.
        handler.server.release.wait(5)
        for _ in range(100):
            handler.event(chunk(" more"))
            time.sleep(0.01)

    server = serve(stream)
    engine = openai(server.url, stream=True)
    started = time.monotonic()
    assert engine.generate([request()]) == ["Hello there"]
    assert time.monotonic() - started < 2.0
    [seen] = server.posts()
    assert seen.body["stream"] is True
    assert seen.headers["Accept"] == "text/event-stream"
    server.release.set()  # the server writes on and notices that the engine hung up
    assert server.client_went_away.wait(5)


@pytest.mark.parametrize("ending", ["[DONE]", "finish_reason"])
def test_streaming_reads_to_the_end_of_the_answer(serve: Any, ending: str) -> None:
    def stream(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        handler.wfile.write(b": a comment\nevent: message\n\n")
        for piece in (" one", " two"):
            handler.event(chunk(piece))
        if ending == "[DONE]":
            handler.event(chunk(""))
            handler.event("[DONE]")
        else:
            handler.event(chunk("", "length"))

    server = serve(stream)
    assert openai(server.url, stream=True).generate([request()]) == ["one two"]


@pytest.mark.parametrize(
    ("reason", "text", "cut"),
    [
        ("length", "one two", True),
        ("stop", "one two", False),
        (None, "one two", False),
        ("length", "one<|im_end|>two", False),  # a stop string ended it, whatever the server says
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_says_when_the_token_limit_ended_the_answer(
    serve: Any, reason: str | None, text: str, cut: bool, stream: bool
) -> None:
    def answer(handler: Handler, seen: Seen) -> None:
        if stream:
            handler.start_events()
            handler.event(chunk(text))
            handler.event(chunk("", reason))
            handler.event("[DONE]")
        else:
            handler.send_json(200, {"choices": [{"text": text, "finish_reason": reason}]})

    server = serve(answer)
    expected = Fetched("one two" if cut or "<" not in text else "one", cut)
    assert openai(server.url, stream=stream).complete(request()) == expected
