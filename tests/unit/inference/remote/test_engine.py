"""The remote engines against a scripted stdlib HTTP server on 127.0.0.1: request mapping,
retries, timeouts, the in-flight bound, streaming, interruption, secrets, and neutralisation.

TGI is only tested here: there is no TGI server to run on this machine.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from relaybot.config.schema import ModelConfig, RemoteConfig, Secret
from relaybot.conversation.formats import Prompt, RelayFormat, Segment, Turn
from relaybot.conversation.instruct import Llama2Format
from relaybot.inference.engine import EngineError, GenerationRequest, SamplingParams
from relaybot.inference.factory import load_engine
from relaybot.inference.remote.engine import RemoteEngine
from relaybot.inference.remote.openai import (
    EXTRAS_GENERATION_CONFIG,
    EXTRAS_NONE,
    EXTRAS_TOP_LEVEL,
    OpenAICompletionsEngine,
)
from relaybot.inference.remote.prompt import (
    INSTRUCTION_MARKERS,
    KNOWN_TOKENS,
    PLAIN_TEXT_MARKUP,
    WORD_JOINER,
    Neutralizer,
    TokenCounter,
    estimate_tokens,
    flatten,
)
from relaybot.inference.remote.tgi import TgiEngine
from relaybot.inference.selection import ModelUnavailable

HOST = "127.0.0.1"
KEY = "sk-relaybot-test-0123456789"


# --- a scripted server ---------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        seen = Seen(method, self.path, dict(self.headers.items()), json.loads(raw) if raw else None)
        fake = self.server
        with fake.lock:
            fake.seen.append(seen)
            fake.active += 1
            fake.max_active = max(fake.max_active, fake.active)
        try:
            fake.respond(self, seen)
        except (BrokenPipeError, ConnectionResetError):
            fake.client_went_away.set()
        finally:
            with fake.lock:
                fake.active -= 1

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    # helpers for scripts

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def start_events(self) -> None:
        # HTTP/1.0 without a length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def event(self, payload: Any) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()


class KeepAliveHandler(Handler):
    """HTTP/1.1: the connection stays open for the next request (send_json sends a length)."""

    protocol_version = "HTTP/1.1"


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        respond: Callable[[Handler, Seen], None],
        *,
        keep_alive: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__((HOST, 0), KeepAliveHandler if keep_alive else Handler)
        if tls is not None:
            # The handshake happens on the handler's thread, at its first read.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if tls is not None else "http"
        self.respond = respond
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.active = 0
        self.max_active = 0
        self.connections = 0  # TCP connections accepted
        self.connections_closed = 0
        self.release = threading.Event()  # set at teardown: blocked scripts end
        self.client_went_away = threading.Event()
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self.lock:
            self.connections_closed += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused TLS handshake, a client that hung up: not the test's output

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.server_address[1]}"

    def posts(self) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.method == "POST"]

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(respond: Callable[[Handler, Seen], None], **options: Any) -> FakeServer:
        server = FakeServer(respond, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def remote(url: str, **overrides: Any) -> RemoteConfig:
    base = RemoteConfig(url=url, retry_backoff=0.01, timeout=5.0, connect_timeout=1.0)
    return replace(base, **overrides)


def openai(url: str, **overrides: Any) -> OpenAICompletionsEngine:
    return OpenAICompletionsEngine(remote(url, **overrides), context_window=2048)


def tgi(url: str, **overrides: Any) -> TgiEngine:
    return TgiEngine(remote(url, **overrides), context_window=2048)


def relay_prompt(text: str = "hello there") -> Prompt:
    return RelayFormat().render([Turn("alice", text)], "relaybot")


def request(prompt: Prompt | None = None, **params: Any) -> GenerationRequest:
    return GenerationRequest(prompt or relay_prompt(), SamplingParams(**params))


def completion(text: str) -> dict[str, Any]:
    return {"choices": [{"text": text, "index": 0, "finish_reason": "stop"}]}


def answer_with(text: str) -> Callable[[Handler, Seen], None]:
    return lambda handler, seen: handler.send_json(200, completion(text))


@dataclass
class Script:
    """Answers in turn from a list (the last one repeats)."""

    steps: list[Callable[[Handler, Seen], None]]
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, handler: Handler, seen: Seen) -> None:
        with self.lock:
            step = self.steps[min(self.calls, len(self.steps) - 1)]
            self.calls += 1
        step(handler, seen)


def status(code: int, detail: str = "", headers: dict[str, str] | None = None) -> Any:
    return lambda handler, seen: handler.send_json(code, {"detail": detail}, headers)


# --- request mapping -----------------------------------------------------------------------


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
        "details": False,
        "stop": ["<|im_end|>", "<|im_start|>"],
        **expected,
    }


def test_tgi_answer_as_a_list_and_at_most_four_stops(serve: Any) -> None:
    server = serve(lambda h, s: h.send_json(200, [{"generated_text": "a\nb STOP5 c"}]))
    prompt = Prompt((Segment("x"),), stop=("S1", "S2", "S3", "S4", "STOP5"))
    assert tgi(server.url).generate([request(prompt)]) == ["a\nb"]
    assert server.posts()[0].body["parameters"]["stop"] == ["S1", "S2", "S3", "S4"]


def test_an_answer_without_text_is_a_clear_error(serve: Any) -> None:
    server = serve(lambda h, s: h.send_json(200, {"error": "model overloaded"}))
    with pytest.raises(EngineError, match=r"unusable answer: no choices.*model overloaded"):
        openai(server.url).generate([request()])
    assert len(server.posts()) == 1


# --- retries, timeouts, failures -----------------------------------------------------------


def test_retries_with_exponential_backoff_on_503_then_succeeds(serve: Any) -> None:
    server = serve(Script([status(503, "loading"), status(503, "loading"), answer_with("ok")]))
    engine = openai(server.url, retries=2, retry_backoff=0.1)
    started = time.monotonic()
    with capture_logs() as logs:
        assert engine.generate([request()]) == ["ok"]
    assert time.monotonic() - started >= 0.3  # 0.1 then 0.2
    assert len(server.posts()) == 3
    failed = [entry for entry in logs if entry["event"] == "remote_request_failed"]
    assert [(entry["attempt"], entry["retry_in"]) for entry in failed] == [(1, 0.1), (2, 0.2)]
    assert all(entry["url"] == server.url and entry["status"] == 503 for entry in failed)
    assert failed[0]["error"] == "HTTP 503: loading"


def test_429_honours_retry_after(serve: Any) -> None:
    server = serve(Script([status(429, "slow down", {"Retry-After": "0.4"}), answer_with("ok")]))
    started = time.monotonic()
    assert openai(server.url, retry_backoff=0.01).generate([request()]) == ["ok"]
    assert time.monotonic() - started >= 0.4


def busy_until(code: int, *, date_header: bool) -> Callable[[Handler, Seen], None]:
    """`code` with Retry-After as an HTTP-date two seconds ahead (whole seconds: one to two
    seconds after the response's own Date); `date_header` False leaves Date out, so that the
    client measures from its own clock."""

    def respond(handler: Handler, seen: Seen) -> None:
        data = json.dumps({"detail": "busy"}).encode()
        until = email.utils.formatdate(time.time() + 2, usegmt=True)
        if date_header:
            handler.send_response(code)  # adds Date
        else:
            handler.send_response_only(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Retry-After", until)
        handler.end_headers()
        handler.wfile.write(data)

    return respond


@pytest.mark.parametrize(("code", "date_header"), [(503, True), (429, False)])
def test_retry_after_as_an_http_date_is_honoured(serve: Any, code: int, date_header: bool) -> None:
    server = serve(Script([busy_until(code, date_header=date_header), answer_with("ok")]))
    started = time.monotonic()
    with capture_logs() as logs:
        assert openai(server.url, retry_backoff=0.01).generate([request()]) == ["ok"]
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 5.0
    [failed] = [entry for entry in logs if entry["event"] == "remote_request_failed"]
    assert 0.95 <= failed["retry_in"] <= 3.0
    assert len(server.posts()) == 2


def test_gives_up_on_5xx_after_the_configured_retries(serve: Any) -> None:
    server = serve(status(500, "CUDA error: device-side assert"))
    with pytest.raises(EngineError) as caught:
        openai(server.url, retries=1).generate([request()])
    assert str(caught.value) == (
        f"remote server {server.url} failed: HTTP 500: CUDA error: device-side assert (2 attempts)"
    )
    assert len(server.posts()) == 2


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_no_retry_on_4xx(serve: Any, code: int) -> None:
    server = serve(status(code, "nope"))
    with pytest.raises(EngineError, match=f"rejected the request: HTTP {code}: nope"):
        openai(server.url, retries=3).generate([request()])
    assert len(server.posts()) == 1


def test_timeout_gives_up_within_the_limit_and_is_not_retried(serve: Any) -> None:
    server = serve(lambda handler, seen: handler.server.release.wait(10))
    engine = openai(server.url, timeout=0.4, retries=2)
    started = time.monotonic()
    with pytest.raises(EngineError) as caught:
        engine.generate([request()])
    elapsed = time.monotonic() - started
    assert str(caught.value) == (
        f"remote server {server.url} timed out: no complete answer within 0.4 s"
    )
    assert 0.35 <= elapsed < 2.0
    assert len(server.posts()) == 1


def test_a_server_that_stalls_after_the_headers_times_out_too(serve: Any) -> None:
    def stall(handler: Handler, seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b'{"choices"')
        handler.wfile.flush()
        handler.server.release.wait(10)

    server = serve(stall)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"timed out: no complete answer within 0\.4 s"):
        openai(server.url, timeout=0.4).generate([request()])
    assert time.monotonic() - started < 2.0


def test_refused_connection_is_a_clear_error_after_the_retries() -> None:
    port = closed_port()
    engine = openai(f"http://{HOST}:{port}", retries=2, retry_backoff=0.01)
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(EngineError) as caught:
        engine.generate([request()])
    assert str(caught.value) == (
        f"remote server http://{HOST}:{port} unreachable: connection refused (3 attempts)"
    )
    assert time.monotonic() - started < 2.0
    failed = [entry for entry in logs if entry["event"] == "remote_request_failed"]
    assert [entry["error"] for entry in failed] == ["connection refused"] * 3
    assert failed[-1]["retry_in"] is None


def test_connection_dropped_mid_answer_is_retried(serve: Any) -> None:
    def drop(handler: Handler, seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "500")
        handler.end_headers()
        handler.wfile.write(b'{"choices": [')
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)

    server = serve(Script([drop, answer_with("second time lucky")]))
    assert openai(server.url).generate([request()]) == ["second time lucky"]
    server2 = serve(drop)
    with pytest.raises(EngineError, match=r"failed: connection lost: .* \(3 attempts\)"):
        openai(server2.url).generate([request()])


# --- concurrency ---------------------------------------------------------------------------


def slow_echo(handler: Handler, seen: Seen) -> None:
    time.sleep(0.2)
    # The last word of the prompt's text comes back, so the order can be checked.
    handler.send_json(200, completion(seen.body["prompt"].split("\n")[-3]))


def numbered(count: int, start: int = 0) -> list[GenerationRequest]:
    return [request(relay_prompt(f"n{index}")) for index in range(start, start + count)]


def test_a_batch_runs_concurrently_but_never_more_than_max_in_flight(serve: Any) -> None:
    server = serve(slow_echo)
    engine = openai(server.url, max_in_flight=2)
    started = time.monotonic()
    assert engine.generate(numbered(6)) == [f"n{index}" for index in range(6)]
    assert server.max_active == 2
    assert time.monotonic() - started < 6 * 0.2  # not one after the other


def test_concurrent_batches_share_the_bound(serve: Any) -> None:
    server = serve(slow_echo)
    engine = openai(server.url, max_in_flight=3)
    results: dict[int, list[str]] = {}

    def run(batch: int) -> None:
        results[batch] = engine.generate(numbered(4, start=batch * 10))

    threads = [threading.Thread(target=run, args=(batch,)) for batch in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert server.max_active == 3
    assert results == {b: [f"n{b * 10 + i}" for i in range(4)] for b in range(3)}


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

    def done(index: int, text: str) -> None:
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
        openai(server.url).generate_continuous(numbered(3), reported.__setitem__, None)
    assert reported == {0: "ok", 2: "ok"}


def test_a_dropped_request_is_not_reported(serve: Any) -> None:
    server = serve(slow_echo)
    reported: dict[int, str] = {}
    engine = openai(server.url)
    engine.generate_continuous(numbered(2), reported.__setitem__, Feed([], drop={1}))
    assert reported == {0: "n0"}
    assert len(server.posts()) == 2


# --- streaming -----------------------------------------------------------------------------


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"text": text, "index": 0, "finish_reason": finish}]}


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


# --- connections ---------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def test_sequential_requests_reuse_one_kept_alive_connection(serve: Any) -> None:
    server = serve(answer_with("ok"), keep_alive=True)
    engine = openai(server.url)
    assert engine.generate([request()]) == ["ok"]
    assert engine.generate([request()]) == ["ok"]
    assert len(server.posts()) == 2
    assert server.connections == 1
    assert server.posts()[1].headers.get("Connection") != "close"
    # Shutting down closes the connection kept for a next request.
    engine.interrupt()
    assert wait_for(lambda: server.connections_closed == 1)


def test_a_kept_alive_connection_the_server_closed_is_not_reused(serve: Any) -> None:
    def answer_then_close(handler: Handler, seen: Seen) -> None:
        handler.send_json(200, completion("ok"))  # HTTP/1.1 without Connection: close
        handler.close_connection = True

    server = serve(answer_then_close, keep_alive=True)
    engine = openai(server.url)
    assert engine.generate([request()]) == ["ok"]
    assert wait_for(lambda: server.connections_closed == 1)
    with capture_logs() as logs:
        assert engine.generate([request()]) == ["ok"]
    assert server.connections == 2
    assert not [entry for entry in logs if entry["event"] == "remote_request_failed"]


def test_a_slow_name_lookup_is_bounded_by_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-dns.test":
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    url = "http://slow-dns.test:8000"
    started = time.monotonic()
    try:
        with pytest.raises(EngineError) as caught:
            openai(url, connect_timeout=0.5, retries=0).generate([request()])
        elapsed = time.monotonic() - started
        # A request timeout shorter than the connect timeout bounds the lookup too.
        with pytest.raises(EngineError, match=r"cannot resolve slow-dns\.test within 0\.3 s"):
            openai(url, connect_timeout=1.0, timeout=0.3, retries=0).generate([request()])
    finally:
        release.set()
    assert str(caught.value) == (
        f"remote server {url} unreachable: cannot resolve slow-dns.test within 0.5 s (1 attempt)"
    )
    assert 0.45 <= elapsed < 2.0


def test_https_trusts_the_ca_file_and_refuses_an_unknown_certificate(
    serve: Any, tmp_path: Path
) -> None:
    from tests.support.certs import make_ca, make_cert

    ca = make_ca(tmp_path / "pki")
    leaf = make_cert(tmp_path / "pki", "server", ca=ca)  # for IP:127.0.0.1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert, leaf.key)
    server = serve(answer_with("secure"), tls=context, keep_alive=True)
    assert server.url.startswith("https://")
    assert openai(server.url, ca_file=str(ca.cert)).generate([request()]) == ["secure"]
    # The system's CAs do not know it: refused at once, never retried.
    with pytest.raises(
        EngineError, match=r"unreachable: TLS certificate verification failed: .*\(1 attempt\)"
    ):
        openai(server.url, retries=2).generate([request()])
    assert openai(server.url, tls_verify=False).generate([request()]) == ["secure"]
    assert len(server.posts()) == 2


# --- interruption --------------------------------------------------------------------------


def test_interrupt_makes_a_request_in_progress_give_up_at_once(serve: Any) -> None:
    arrived = threading.Event()

    def hang(handler: Handler, seen: Seen) -> None:
        arrived.set()
        handler.server.release.wait(10)

    server = serve(hang)
    engine = openai(server.url, timeout=30, max_in_flight=1)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.generate(numbered(2))
        except EngineError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert arrived.wait(5)
    started = time.monotonic()
    engine.interrupt()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert "interrupted" in str(outcome[0])
    # The second request was waiting for the only slot; it never reached the server.
    assert len(server.posts()) == 1
    with pytest.raises(EngineError, match="interrupted"):
        engine.generate([request()])


def test_interrupt_ends_a_stream_being_read(serve: Any) -> None:
    def trickle(handler: Handler, seen: Seen) -> None:
        handler.start_events()
        handler.event(chunk("one"))
        handler.server.release.wait(10)

    server = serve(trickle)
    engine = openai(server.url, stream=True, timeout=30)
    threading.Timer(0.3, engine.interrupt).start()
    started = time.monotonic()
    with pytest.raises(EngineError, match="interrupted"):
        engine.generate([request()])
    assert time.monotonic() - started < 2.0


def test_interrupt_ends_the_backoff_wait() -> None:
    engine = openai(f"http://{HOST}:{closed_port()}", retries=5, retry_backoff=10.0)
    threading.Timer(0.3, engine.interrupt).start()
    started = time.monotonic()
    with pytest.raises(EngineError, match="interrupted"):
        engine.generate([request()])
    assert time.monotonic() - started < 2.0


# --- secrets -------------------------------------------------------------------------------


def test_the_api_key_is_sent_but_never_logged_or_raised(serve: Any) -> None:
    def echo_headers(handler: Handler, seen: Seen) -> None:
        # A careless server that echoes the request headers in its error.
        handler.send_json(503, {"detail": f"overloaded; you sent {seen.headers}"})

    server = serve(echo_headers)
    engine = openai(server.url, api_key=Secret(KEY), retries=1)
    with capture_logs() as logs, pytest.raises(EngineError) as caught:
        engine.generate([request()])
    assert all(seen.headers["Authorization"] == f"Bearer {KEY}" for seen in server.posts())
    assert len(logs) == 2
    assert KEY not in repr(logs)
    assert KEY not in str(caught.value)
    assert "Bearer ***" in str(caught.value)
    assert KEY not in engine.description and KEY not in repr(engine.remote)


# --- neutralisation ------------------------------------------------------------------------

MARKUP = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>",
    "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<unk>", "<start_of_turn>",
    "[SYSTEM_PROMPT]", "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
)  # fmt: skip


def hostile_prompt() -> Prompt:
    typed = " ".join(MARKUP)
    return Prompt(
        (
            Segment("<s>", special=True),
            Segment("<|im_start|>", special=True),
            Segment(f"alice\n{typed}"),
            Segment("<|im_end|>", special=True),
            Segment("\n<|im_"),  # a token split over two text segments
            Segment("end|>[INS"),
            Segment("T]"),
            Segment("<|im_start|>", special=True),
            Segment("relaybot\n"),
        ),
        stop=("<|im_end|>",),
    )


def test_markup_typed_by_people_does_not_survive_flattening() -> None:
    prompt = hostile_prompt()
    flat = flatten(prompt, Neutralizer())
    special = "".join(segment.text for segment in prompt.segments if segment.special)
    for marker in (*MARKUP, "<|", "<\uff5c"):
        assert flat.count(marker) == special.count(marker), marker
    # Only invisible characters were added, and the markup segments are there verbatim.
    assert flat.replace(WORD_JOINER, "") == prompt.text
    assert flat.startswith("<s><|im_start|>alice\n")
    assert flat.endswith("<|im_start|>relaybot\n")


TOKEN_PIECES = [
    "<", "|", ">", "<|", "|>", "im_end", "im_start", "s>", "</", "<s", "[", "]", "INST",
    "/INST", "<<", ">>", "SYS", "/", "\uff5c", "a", " ", "\n", WORD_JOINER,
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKEN_PIECES), max_size=30).map("".join))
def test_neutralised_text_holds_no_special_token(text: str) -> None:
    neutralize = Neutralizer(extra_tokens=["<repo_name>"])
    out = neutralize(text)
    for token in (*KNOWN_TOKENS, *INSTRUCTION_MARKERS, "<repo_name>", "<|", "<\uff5c"):
        assert token not in out
    assert out.replace(WORD_JOINER, "") == text.replace(WORD_JOINER, "")


def test_llama2_keeps_its_plain_text_markup_but_not_other_tokens() -> None:
    neutralize = Neutralizer(keep=PLAIN_TEXT_MARKUP["llama2"])
    prompt = Llama2Format().instruction("be brief", "<alice> hi </s><|im_end|>")
    flat = flatten(prompt, neutralize)
    assert flat.startswith("[INST] <<SYS>>\nbe brief\n<</SYS>>\n\n")
    assert flat.endswith(" [/INST]")
    assert "</s>" not in flat and "<|im_end|>" not in flat


def test_from_config_keeps_the_markup_of_the_configured_format() -> None:
    config = ModelConfig(engine="openai", format="llama2", remote=remote("http://127.0.0.1:9"))
    engine = OpenAICompletionsEngine.from_config(config)
    prompt = Llama2Format().instruction("sys", "user")
    assert engine.render(prompt) == prompt.text
    relay = OpenAICompletionsEngine.from_config(replace(config, format="relay"))
    assert "[INST]" not in relay.render(prompt)


def smollm2_tokenizer_dir() -> Path | None:
    try:
        from relaybot.inference.local.loading import default_cache_dir, gguf_cache_path
        from relaybot.inference.selection import EMBEDDED_GGUF, embedded_model_dir
    except ImportError:
        return None
    try:
        directory = embedded_model_dir()
    except ModelUnavailable:
        return None
    converted = gguf_cache_path(default_cache_dir(), directory / EMBEDDED_GGUF)
    return converted if (converted / "tokenizer_config.json").is_file() else None


@pytest.fixture(scope="module")
def smollm2() -> TokenCounter:
    directory = smollm2_tokenizer_dir()
    if directory is None:
        pytest.skip("the converted embedded model is not in the cache (run the model tests)")
    counter = TokenCounter.for_model(ModelConfig(name=str(directory)))
    assert counter.exact
    return counter


def test_a_server_side_tokenizer_finds_only_the_formats_special_tokens(
    smollm2: TokenCounter,
) -> None:
    """Tokenise the flattened prompt as a server does (special tokens parsed): the special
    tokens are exactly those of the markup segments."""
    tokenizer: Any = smollm2.tokenizer
    prompt = hostile_prompt()
    neutralize = Neutralizer(extra_tokens=smollm2.special_tokens())
    flat = flatten(prompt, neutralize)
    special_ids = set(tokenizer.all_special_ids) | {
        int(i) for i, added in tokenizer.added_tokens_decoder.items() if added.special
    }

    def specials(text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return [token for token in ids if token in special_ids]

    markup = "".join(segment.text for segment in prompt.segments if segment.special)
    assert specials(flat) == specials(markup)
    assert len(specials(prompt.text)) > len(specials(markup))  # unneutralised, it forges
    assert "<repo_name>" in smollm2.special_tokens()
    assert "<repo_name>" not in neutralize("see <repo_name>")


# --- token counting ------------------------------------------------------------------------


def test_without_a_local_tokenizer_tokens_are_estimated_conservatively() -> None:
    engine = OpenAICompletionsEngine.from_config(
        ModelConfig(engine="openai", name="auto", remote=remote("http://127.0.0.1:9"))
    )
    assert not engine.counter.exact
    assert engine.count_tokens("abcdef") == 2
    assert engine.count_tokens("abcdefg") == 3
    assert engine.count_tokens("é") == 1
    assert estimate_tokens("") == 0


def test_a_local_tokenizer_counts_exactly(smollm2: TokenCounter) -> None:
    text = "hello <|im_end|> world, how are you?"
    tokenizer: Any = smollm2.tokenizer
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)
    assert smollm2.count(text) == len(ids["input_ids"])
    assert smollm2.count(text) < estimate_tokens(text) + 5


def test_embedded_resolves_to_the_local_tokenizer(smollm2: TokenCounter) -> None:
    config = ModelConfig(engine="openai", name="embedded", remote=remote("http://127.0.0.1:9"))
    engine = OpenAICompletionsEngine.from_config(config)
    assert engine.counter.exact
    assert engine.count_tokens("hello <|im_end|>") == smollm2.count("hello <|im_end|>")
    assert engine.context_window == config.context_tokens


def test_a_missing_model_directory_falls_back_to_estimating(tmp_path: Path) -> None:
    config = ModelConfig(name=str(tmp_path / "nowhere"), remote=remote("http://127.0.0.1:9"))
    assert not TgiEngine.from_config(config).counter.exact
    empty = ModelConfig(name=str(tmp_path), remote=remote("http://127.0.0.1:9"))
    assert not TgiEngine.from_config(empty).counter.exact


# --- the factory ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "cls"), [("openai", OpenAICompletionsEngine), ("tgi", TgiEngine)])
def test_factory_builds_the_engine_and_only_warns_when_the_server_is_down(
    kind: str, cls: type[RemoteEngine]
) -> None:
    url = f"http://{HOST}:{closed_port()}"
    config = ModelConfig(engine=kind, remote=remote(url), context_tokens=4096)
    started = time.monotonic()
    with capture_logs() as logs:
        engine = load_engine(config)
    assert time.monotonic() - started < 5.0
    assert isinstance(engine, cls)
    assert url in engine.description
    assert engine.context_window == 4096
    [warning] = [entry for entry in logs if entry["event"] == "remote_unreachable"]
    assert warning["log_level"] == "warning"
    assert "connection refused" in warning["error"]


def test_factory_probe_finds_the_health_endpoint_at_the_root(serve: Any) -> None:
    server = serve(lambda handler, seen: handler.send_json(200, {"status": "ok"}))
    config = ModelConfig(engine="openai", remote=remote(server.url + "/v1"))
    with capture_logs() as logs:
        load_engine(config)
    assert [seen.path for seen in server.seen] == ["/health"]
    assert [entry["event"] for entry in logs if entry["event"].startswith("remote_")] == [
        "remote_ready"
    ]


def test_factory_probe_tries_the_models_list_when_there_is_no_health(serve: Any) -> None:
    def no_health(handler: Handler, seen: Seen) -> None:
        if seen.path == "/health":
            handler.send_json(404, {"detail": "Not Found"})
        else:
            handler.send_json(200, {"data": []})

    server = serve(no_health)
    with capture_logs() as logs:
        load_engine(ModelConfig(engine="openai", remote=remote(server.url)))
    assert [seen.path for seen in server.seen] == ["/health", "/v1/models"]
    ready = [entry for entry in logs if entry["event"] == "remote_ready"]
    assert ready[0]["path"] == "/v1/models"


def test_an_unreadable_ca_file_is_a_setup_error(tmp_path: Path) -> None:
    config = ModelConfig(
        engine="tgi",
        remote=remote("https://127.0.0.1:9", ca_file=str(tmp_path / "missing.pem")),
    )
    with pytest.raises(ModelUnavailable, match="cannot set up the TGI server"):
        load_engine(config)


def test_a_failed_tls_handshake_is_a_connection_failure() -> None:
    # A plain-text listener: the TLS handshake fails at once.
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]

        def reply_garbage() -> None:
            with contextlib.suppress(OSError):
                for _ in range(3):
                    conn, _addr = listener.accept()
                    conn.sendall(b"HTTP/1.0 400 not tls\r\n\r\n")
                    conn.close()

        threading.Thread(target=reply_garbage, daemon=True).start()
        engine = tgi(f"https://{HOST}:{port}", retries=2)
        with pytest.raises(EngineError, match=r"unreachable: TLS handshake failed.*\(3 attempts\)"):
            engine.generate([request()])
