"""HTTP transport for the remote engines: one POST with a deadline, retries with backoff, a
shared bound on requests in flight, interruption at shutdown, and Server-Sent Events reading.

Standard library only (http.client), so a bot that talks to a remote server needs nothing more.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from relaybot.config import RemoteConfig
from relaybot.engine import EngineError
from relaybot.log import get_logger

log = get_logger(component="engine")

T = TypeVar("T")

MAX_BODY_BYTES = 16 * 1024 * 1024  # a completion is kilobytes; anything this big is broken
MAX_LINE_BYTES = 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
BACKOFF_CAP = 30.0  # seconds; also caps a server's Retry-After
DETAIL_CHARS = 300
SLOT_POLL = 0.05  # how often a request waiting for a slot looks at the interrupt flag
PROBE_TIMEOUT = 5.0  # a start-up probe must not hold the bot up for a whole request timeout


class RemoteRejected(EngineError):
    """The server refused the request with a 4xx status that retrying cannot change."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class StreamError(Exception):
    """A streamed answer carried an error instead of text."""


class StreamReader(Protocol):
    """Collects one streamed completion; a fresh reader is made for every attempt."""

    def feed(self, data: str) -> bool:
        """One SSE `data:` payload; True once the answer is complete or a stop string appeared."""
        ...

    @property
    def text(self) -> str: ...


class _AttemptFailed(Exception):
    """One attempt failed; `kind` decides the final message, `retryable` whether to go on."""

    def __init__(
        self,
        cause: str,
        *,
        kind: str,
        retryable: bool,
        status: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.kind = (
            kind  # connect | lost | status | rejected | timeout | answer | busy | interrupted
        )
        self.retryable = retryable
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is: `url` as configured, split for http.client."""

    url: str
    tls: bool
    host: str
    port: int
    base_path: str  # "" or a prefix such as "/api" or "/v1", without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(url.rstrip("/"), tls, parts.hostname, port, parts.path.rstrip("/"))

    def api_path(self, path: str) -> str:
        """`path` (such as /v1/completions) under the base path; OpenAI clients are often
        given a base URL that already ends in /v1, so that prefix is not doubled."""
        if path.startswith("/v1/") and self.base_path.endswith("/v1"):
            return self.base_path + path.removeprefix("/v1")
        return self.base_path + path

    def root_path(self, path: str) -> str:
        """`path` (such as /health) at the server's root, below any /v1 of the base URL."""
        return self.base_path.removesuffix("/v1") + path

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(exc, BrokenPipeError):
        return "the server stopped reading"
    if isinstance(exc, http.client.IncompleteRead):
        return "the answer was cut off"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff
    return max(0.0, seconds)


def error_detail(raw: bytes, redact: Callable[[str], str] = str) -> str:
    """The useful part of an error body on one line: the `detail`, `error` or `message` of a
    JSON body (however deeply nested), or the text itself. `redact` runs before shortening,
    so that a secret is never cut into a piece it no longer matches."""
    text = redact(raw.decode("utf-8", "replace").strip())
    found: Any
    try:
        found = json.loads(text)
    except ValueError:
        found = text
    for _ in range(3):
        if not isinstance(found, dict):
            break
        inner = next((found[key] for key in ("detail", "error", "message") if found.get(key)), None)
        if inner is None:
            break
        found = inner
    text = " ".join((found if isinstance(found, str) else json.dumps(found)).split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


class _Response:
    """An open response whose every read is bounded by the attempt's deadline."""

    def __init__(self, response: http.client.HTTPResponse, arm: Callable[[], None]) -> None:
        self._response = response
        self._arm = arm

    @property
    def status(self) -> int:
        return int(self._response.status)

    def body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            self._arm()
            chunk = self._response.read1(65536)
            if not chunk:
                missing = self._response.length
                if missing:  # read1 reports a connection closed early as a quiet end
                    raise http.client.IncompleteRead(b"".join(chunks), missing)
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _AttemptFailed(
                    f"the answer is larger than {limit} bytes", kind="answer", retryable=False
                )
            chunks.append(chunk)

    def events(self) -> Iterator[str]:
        """The `data` of each Server-Sent Event (multi-line data joined with newlines)."""
        data: list[str] = []
        while True:
            self._arm()
            line = self._response.readline(MAX_LINE_BYTES)
            if not line:
                if data:  # some servers end the stream without the final blank line
                    yield "\n".join(data)
                return
            if not line.endswith(b"\n") and len(line) >= MAX_LINE_BYTES:
                raise _AttemptFailed("a streamed line is too long", kind="answer", retryable=False)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if data:
                    yield "\n".join(data)
                    data = []
            elif text.startswith("data:"):
                value = text[5:]
                data.append(value[1:] if value.startswith(" ") else value)
            # `event:`, `id:`, `retry:` and `:` comments carry nothing the engines use.


class RemoteClient:
    """Talks to one server. Thread-safe: the engines call it from one thread per request."""

    def __init__(
        self,
        config: RemoteConfig,
        *,
        engine: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.engine = engine
        self.target = Target.parse(config.url)
        self._clock = clock
        self._ssl = self._ssl_context() if self.target.tls else None
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self._interrupted = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._secret = config.api_key.value if config.api_key is not None else ""

    @property
    def url(self) -> str:
        return self.target.url

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.config.ca_file)
        if not self.config.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # --- public ------------------------------------------------------------------------

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        def consume(response: _Response) -> Any:
            raw = response.body()
            try:
                return json.loads(raw)
            except ValueError:
                raise _AttemptFailed(
                    f"the answer is not JSON: {error_detail(raw, self.redact)!r}",
                    kind="answer",
                    retryable=False,
                ) from None

        return self._call("POST", path, body, "application/json", consume)

    def post_stream(
        self, path: str, body: dict[str, Any], new_reader: Callable[[], StreamReader]
    ) -> str:
        """Stream an answer; reading stops as soon as the reader says it has enough (a stop
        string appeared), which closes the connection and lets the server stop generating."""

        def consume(response: _Response) -> str:
            reader = new_reader()
            try:
                for data in response.events():
                    if reader.feed(data):
                        return reader.text
            except StreamError as exc:
                raise _AttemptFailed(
                    f"the stream reported an error: {self.redact(str(exc))}",
                    kind="answer",
                    retryable=False,
                ) from None
            raise _AttemptFailed(
                "the stream ended before the answer was complete", kind="lost", retryable=True
            )

        return self._call("POST", path, body, "text/event-stream", consume)

    @property
    def interrupted(self) -> bool:
        """True once `interrupt` was called (shutdown)."""
        return self._interrupted.is_set()

    def interrupt(self) -> None:
        """Make every request in progress, and every later one, give up at once."""
        self._interrupted.set()
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            # Shutting the socket down wakes a thread blocked reading it; closing is its job.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def probe(self, paths: Sequence[str]) -> None:
        """Log whether the server answers (start-up only: it never raises)."""
        last = ""
        for path in paths:
            try:
                status = self._call(
                    "GET", path, None, "application/json", _status_only, timeout=PROBE_TIMEOUT
                )
            except RemoteRejected as exc:
                last = f"HTTP {exc.status} for {path}"
                continue
            except EngineError as exc:
                log.warning(
                    "remote_unreachable",
                    engine=self.engine,
                    url=self.url,
                    error=str(exc),
                    hint="the bot starts anyway; replies fail until the server is up",
                )
                return
            log.info("remote_ready", engine=self.engine, url=self.url, path=path, status=status)
            return
        log.info("remote_reachable", engine=self.engine, url=self.url, answer=last)

    def redact(self, text: str) -> str:
        """Never let the API key reach a log line or an error message, even when a server
        echoes the request back."""
        return text.replace(self._secret, "***") if self._secret else text

    # --- the retry loop ----------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        accept: str,
        consume: Callable[[_Response], T],
        *,
        timeout: float | None = None,
    ) -> T:
        payload = None if body is None else json.dumps(body).encode()
        limit = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        attempts = 1 if method == "GET" else self.config.retries + 1
        failure: _AttemptFailed | None = None
        attempt = 0
        for attempt in range(1, attempts + 1):
            try:
                self._take_slot()
                try:
                    return self._attempt(method, path, payload, accept, consume, limit)
                finally:
                    self._slots.release()
            except _AttemptFailed as failed:
                failure = failed
            if self._interrupted.is_set():
                failure = self._interrupted_failure()
            will_retry = failure.retryable and attempt < attempts
            delay = self._delay(attempt, failure) if will_retry else None
            if failure.kind == "rejected":
                # Not a fault of the server: the caller may step down (fewer fields) or
                # raise, and the bot logs the final error with the reply it drops.
                log.info(
                    "remote_request_rejected",
                    engine=self.engine,
                    url=self.url,
                    path=path,
                    status=failure.status,
                    error=failure.cause,
                )
            elif failure.kind != "interrupted":
                log.warning(
                    "remote_request_failed",
                    engine=self.engine,
                    url=self.url,
                    path=path,
                    attempt=attempt,
                    attempts=attempts,
                    error=failure.cause,
                    status=failure.status,
                    retry_in=None if delay is None else round(delay, 3),
                )
            if delay is None:
                break
            if self._interrupted.wait(delay):
                failure = self._interrupted_failure()
                break
        assert failure is not None
        raise self._final_error(failure, attempt)

    def _delay(self, attempt: int, failure: _AttemptFailed) -> float:
        delay = self.config.retry_backoff * 2.0 ** (attempt - 1)
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        return min(delay, BACKOFF_CAP)

    def _final_error(self, failure: _AttemptFailed, attempts: int) -> EngineError:
        url = self.url
        if failure.kind == "rejected":
            return RemoteRejected(
                f"remote server {url} rejected the request: {failure.cause}",
                failure.status or 0,
                failure.detail,
            )
        messages = {
            "connect": f"remote server {url} unreachable: {failure.cause}",
            "lost": f"remote server {url} failed: {failure.cause}",
            "status": f"remote server {url} failed: {failure.cause}",
            "timeout": f"remote server {url} timed out: {failure.cause}",
            "answer": f"remote server {url} sent an unusable answer: {failure.cause}",
            "busy": f"remote server {url} busy: {failure.cause}",
            "interrupted": f"remote request to {url} interrupted (shutting down)",
        }
        message = messages[failure.kind]
        if failure.kind in ("connect", "lost", "status"):
            message += f" ({_attempts(attempts)})"
        return EngineError(message)

    def _interrupted_failure(self) -> _AttemptFailed:
        return _AttemptFailed("interrupted", kind="interrupted", retryable=False)

    def _take_slot(self) -> None:
        """Wait for one of the `max_in_flight` slots, shared by every batch of this engine."""
        give_up = self._clock() + self.config.timeout
        while not self._slots.acquire(timeout=SLOT_POLL):
            if self._interrupted.is_set():
                raise self._interrupted_failure()
            if self._clock() >= give_up:
                raise _AttemptFailed(
                    f"all {self.config.max_in_flight} request slots stayed busy for "
                    f"{self.config.timeout:g} s",
                    kind="busy",
                    retryable=False,
                )

    # --- one attempt -------------------------------------------------------------------

    def _attempt(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        accept: str,
        consume: Callable[[_Response], T],
        limit: float,
    ) -> T:
        if self._interrupted.is_set():
            raise self._interrupted_failure()
        deadline = self._clock() + limit
        sock = self._connect(deadline)

        def arm() -> None:
            if self._interrupted.is_set():
                raise self._interrupted_failure()
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._timeout_failure(limit)
            sock.settimeout(remaining)

        response: http.client.HTTPResponse | None = None
        try:
            connection = http.client.HTTPConnection(self.target.host, self.target.port)
            connection.sock = sock  # our socket: connected under our timeouts, interruptible
            arm()
            connection.request(method, path, body=payload, headers=self._headers(accept, payload))
            arm()
            response = connection.getresponse()
            if not 200 <= response.status < 300:
                raise self._status_failure(response, arm)
            return consume(_Response(response, arm))
        except _AttemptFailed:
            raise
        except TimeoutError:
            raise self._timeout_failure(limit) from None
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise _AttemptFailed(
                f"connection lost: {_describe(exc)}", kind="lost", retryable=True
            ) from None
        finally:
            self._forget(sock)
            if response is not None:
                response.close()
            sock.close()

    def _headers(self, accept: str, payload: bytes | None) -> dict[str, str]:
        headers = {
            "Host": self.target.host_header,
            "Accept": accept,
            "User-Agent": "relaybot",
            "Connection": "close",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        return headers

    def _timeout_failure(self, limit: float) -> _AttemptFailed:
        return _AttemptFailed(
            f"no complete answer within {limit:g} s", kind="timeout", retryable=False
        )

    def _status_failure(
        self, response: http.client.HTTPResponse, arm: Callable[[], None]
    ) -> _AttemptFailed:
        status = response.status
        try:
            detail = error_detail(_Response(response, arm).body(MAX_ERROR_BODY_BYTES), self.redact)
        except _AttemptFailed:
            detail = ""
        cause = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status == 429 or status >= 500:
            retry_after = _retry_after(response.getheader("Retry-After"))
            return _AttemptFailed(
                cause,
                kind="status",
                retryable=True,
                status=status,
                detail=detail,
                retry_after=retry_after,
            )
        return _AttemptFailed(cause, kind="rejected", retryable=False, status=status, detail=detail)

    def _connect(self, deadline: float) -> socket.socket:
        timeout = max(0.001, min(self.config.connect_timeout, deadline - self._clock()))
        host, port = self.target.host, self.target.port
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _AttemptFailed(
                f"cannot resolve {host}: {exc.strerror}", kind="connect", retryable=True
            ) from None
        cause = "no address"
        for family, kind, proto, _name, address in addresses:
            sock = socket.socket(family, kind, proto)
            self._remember(sock)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except TimeoutError:
                cause = f"no connection within {timeout:g} s"
            except OSError as exc:
                cause = _describe(exc)
            else:
                return self._secure(sock) if self._ssl is not None else sock
            self._forget(sock)
            sock.close()
            if self._interrupted.is_set():
                raise self._interrupted_failure()
        raise _AttemptFailed(cause, kind="connect", retryable=True)

    def _secure(self, sock: socket.socket) -> socket.socket:
        assert self._ssl is not None
        self._forget(sock)
        wrapped = self._ssl.wrap_socket(
            sock, server_hostname=self.target.host, do_handshake_on_connect=False
        )
        # Registered before the handshake, so that interrupt() can cut that short too.
        self._remember(wrapped)
        try:
            wrapped.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            self._forget(wrapped)
            wrapped.close()
            # A certificate problem is configuration: retrying cannot fix it.
            raise _AttemptFailed(
                f"TLS certificate verification failed: {exc.verify_message or exc}",
                kind="connect",
                retryable=False,
            ) from None
        except TimeoutError:
            self._forget(wrapped)
            wrapped.close()
            raise _AttemptFailed(
                "TLS handshake timed out", kind="connect", retryable=True
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._forget(wrapped)
            wrapped.close()
            raise _AttemptFailed(
                f"TLS handshake failed: {_describe(exc)}", kind="connect", retryable=True
            ) from None
        return wrapped

    def _remember(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)


def _status_only(response: _Response) -> int:
    response.body(MAX_ERROR_BODY_BYTES)
    return response.status
