"""HTTP policy for the remote engines: one request with a deadline, retries with backoff, a
shared bound on requests in flight, interruption at shutdown, bounded answers and Server-Sent
Events reading, and what each failure means.

HTTP is httpx (one client per server, so connections are kept alive and reused) and SSE parsing
is httpx-sse. The network layer under httpx (deadline-bounded DNS, connect and TLS, and sockets
that `interrupt` can wake) is remote_network's.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol, TypeVar

import httpcore
import httpx
import httpx_sse

from relaybot.config.schema import RemoteConfig
from relaybot.inference.engine import EngineError
from relaybot.inference.remote.network import (
    Interrupted,
    Network,
    Transport,
    UntrustedCertificate,
    describe,
)
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
# Idle connections are dropped after this many seconds: under uvicorn's 5 s keep-alive (vLLM,
# `transformers serve`), so that a connection is rarely reused just as the server closes it.
KEEPALIVE_EXPIRY = 4.0


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
        # connect | lost | status | rejected | timeout | answer | busy | interrupted
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def _interrupted() -> _AttemptFailed:
    return _AttemptFailed("interrupted", kind="interrupted", retryable=False)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is: `url` as configured, split into its parts."""

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

    @property
    def origin(self) -> str:
        """scheme://host[:port], without the user information or the path of `url`."""
        return f"{'https' if self.tls else 'http'}://{self.host_header}"


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _http_date(value: str) -> float | None:
    """An HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT", or the obsolete RFC 850 and asctime
    forms) as a Unix time; None when it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000", or no zone at all: HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _retry_after(
    value: str | None, date: str | None = None, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds, or an HTTP-date. A date is
    measured against the response's own Date header when it has one (the server's clock on
    both sides: no skew between the machines), else against this machine's clock."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds)
    when = _http_date(value)
    if when is None:
        return None  # neither form: fall back to our own backoff
    reference = _http_date(date) if date else None
    return max(0.0, when - (now() if reference is None else reference))


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


# --- responses -----------------------------------------------------------------------------


class _EventBytes(httpx.SyncByteStream):
    """An event stream's body, bounded (MAX_BODY_BYTES in all, MAX_LINE_BYTES a line) and
    ended with a blank line, so that the last event of a server that leaves that out is
    still read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        line = 0
        for chunk in self._chunks:
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise _AttemptFailed(
                    f"the answer is larger than {MAX_BODY_BYTES} bytes",
                    kind="answer",
                    retryable=False,
                )
            end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
            line = line + len(chunk) if end < 0 else len(chunk) - end - 1
            if line > MAX_LINE_BYTES:
                raise _AttemptFailed("a streamed line is too long", kind="answer", retryable=False)
            yield chunk
        yield b"\n\n"


class _Response:
    """An open response; reading it is bounded by the attempt's deadline (see remote_network)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    def body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in self._response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise _AttemptFailed(
                    f"the answer is larger than {limit} bytes", kind="answer", retryable=False
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def events(self) -> Iterator[str]:
        """The `data` of each Server-Sent Event (multi-line data joined with newlines); lines
        may end in \\r\\n, \\n or \\r. Events without data carry nothing the engines use."""
        content_type = self._response.headers.get("Content-Type", "")
        body = _EventBytes(self._response.iter_bytes())  # already decoded: no Content-Encoding
        source = httpx_sse.EventSource(
            httpx.Response(self.status, headers={"Content-Type": content_type}, stream=body)
        )
        try:
            for event in source.iter_sse():
                if event.data:
                    yield event.data
        except httpx_sse.SSEError as exc:
            raise _AttemptFailed(
                f"the answer is not an event stream: {exc}", kind="answer", retryable=False
            ) from None


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
        self._secret = config.api_key.value if config.api_key is not None else ""
        self._network = Network(clock, self._interrupted)
        # One pool for the client's life: connections are kept alive and reused. It never
        # needs more connections than the slots let requests in.
        pool = httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=config.max_in_flight,
            max_keepalive_connections=config.max_in_flight,
            keepalive_expiry=KEEPALIVE_EXPIRY,
            network_backend=self._network,
        )
        self._http = httpx.Client(
            transport=Transport(pool),
            # No proxies, netrc or SSL_* variables from the environment: the config says
            # where the server is and how to trust it.
            trust_env=False,
            follow_redirects=False,
            # identity: the byte limits below then bound what is held in memory.
            headers={"User-Agent": "relaybot", "Accept-Encoding": "identity"},
        )
        self._users = 0  # attempts using _http; the last one out after interrupt closes it
        self._users_lock = threading.Lock()
        self._closed = False

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
        """Make every request in progress, and every later one, give up at once; the
        connections are closed once the last request in progress has given up."""
        self._interrupted.set()
        self._network.shutdown_all()
        self._close_when_idle()

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
                failure = _interrupted()
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
                failure = _interrupted()
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
        if failure.kind == "interrupted":
            return EngineError(f"remote request to {url} interrupted (shutting down)")
        if failure.kind == "rejected":
            return RemoteRejected(
                f"remote server {url} rejected the request: {failure.cause}",
                failure.status or 0,
                failure.detail,
            )
        what = {
            "connect": "unreachable",
            "lost": "failed",
            "status": "failed",
            "timeout": "timed out",
            "answer": "sent an unusable answer",
            "busy": "busy",
        }[failure.kind]
        message = f"remote server {url} {what}: {failure.cause}"
        if failure.kind in ("connect", "lost", "status"):
            message += f" ({_attempts(attempts)})"
        return EngineError(message)

    def _take_slot(self) -> None:
        """Wait for one of the `max_in_flight` slots, shared by every batch of this engine."""
        give_up = self._clock() + self.config.timeout
        while not self._slots.acquire(timeout=SLOT_POLL):
            if self._interrupted.is_set():
                raise _interrupted()
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
        self._enter()
        # httpx's timeouts are per operation; the Network holds the whole attempt to `limit`.
        timeout = httpx.Timeout(
            connect=min(self.config.connect_timeout, limit), read=limit, write=limit, pool=limit
        )
        try:
            with (
                self._network.deadline(limit),
                self._http.stream(
                    method,
                    self.target.origin + path,
                    content=payload,
                    headers=self._headers(accept, payload),
                    timeout=timeout,
                ) as response,
            ):
                if not 200 <= response.status_code < 300:
                    raise self._status_failure(response)
                return consume(_Response(response))
        except Interrupted:
            raise _interrupted() from None
        except UntrustedCertificate as exc:  # configuration: retrying cannot fix it
            raise _AttemptFailed(str(exc), kind="connect", retryable=False) from None
        except (httpx.ConnectTimeout, httpx.ConnectError) as exc:
            raise _AttemptFailed(self.redact(str(exc)), kind="connect", retryable=True) from None
        except httpx.TimeoutException:
            raise _AttemptFailed(
                f"no complete answer within {limit:g} s", kind="timeout", retryable=False
            ) from None
        except httpx.TransportError as exc:
            raise _AttemptFailed(
                f"connection lost: {self.redact(describe(exc))}", kind="lost", retryable=True
            ) from None
        except httpx.DecodingError as exc:
            raise _AttemptFailed(
                f"the answer cannot be decoded: {self.redact(str(exc))}",
                kind="answer",
                retryable=False,
            ) from None
        except OSError as exc:  # from the sockets, past httpcore unmapped
            raise _AttemptFailed(
                f"connection lost: {describe(exc)}", kind="lost", retryable=True
            ) from None
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._users_lock:
            if self._interrupted.is_set():
                raise _interrupted()
            self._users += 1

    def _leave(self) -> None:
        with self._users_lock:
            self._users -= 1
        if self._interrupted.is_set():
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        with self._users_lock:
            if self._users or self._closed:
                return
            self._closed = True
        self._http.close()

    def _headers(self, accept: str, payload: bytes | None) -> dict[str, str]:
        headers = {"Accept": accept}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        return headers

    def _status_failure(self, response: httpx.Response) -> _AttemptFailed:
        status = response.status_code
        try:
            detail = error_detail(_Response(response).body(MAX_ERROR_BODY_BYTES), self.redact)
        except _AttemptFailed:
            detail = ""
        cause = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status == 429 or status >= 500:
            retry_after = _retry_after(
                response.headers.get("Retry-After"), response.headers.get("Date")
            )
            return _AttemptFailed(
                cause,
                kind="status",
                retryable=True,
                status=status,
                detail=detail,
                retry_after=retry_after,
            )
        return _AttemptFailed(cause, kind="rejected", retryable=False, status=status, detail=detail)


def _status_only(response: _Response) -> int:
    response.body(MAX_ERROR_BODY_BYTES)
    return response.status
