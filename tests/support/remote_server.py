"""A scripted stdlib HTTP server on 127.0.0.1 and helpers for the remote engine tests."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from relaybot.config.schema import RemoteConfig
from relaybot.conversation.formats import Prompt, RelayFormat, Turn
from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.remote.openai import OpenAICompletionsEngine
from relaybot.inference.remote.tgi import TgiEngine

HOST = "127.0.0.1"


KEY = "sk-relaybot-test-0123456789"


# --- a scripted server --------------------------------------------------------------------


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


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- engines, requests and scripted answers -----------------------------------------------


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


def slow_echo(handler: Handler, seen: Seen) -> None:
    time.sleep(0.2)
    # The last word of the prompt's text comes back, so the order can be checked.
    handler.send_json(200, completion(seen.body["prompt"].split("\n")[-3]))


def numbered(count: int, start: int = 0) -> list[GenerationRequest]:
    return [request(relay_prompt(f"n{index}")) for index in range(start, start + count)]


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"text": text, "index": 0, "finish_reason": finish}]}
