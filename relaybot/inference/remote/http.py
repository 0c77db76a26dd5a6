"""The HTTP client of the remote engines: one server's connections (httpx, one client per
server, so connections are kept alive and reused), a shared bound on requests in flight, one
request with a deadline and its retries with backoff, and interruption at shutdown.

What each failure means and how long to wait before the next attempt is remote_failures';
reading answers (bounded bodies, Server-Sent Events) is remote_responses'; the network layer
under httpx (deadline-bounded DNS, connect and TLS, and sockets that `interrupt` can wake) is
remote_network's.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpcore
import httpx

from relaybot.config.schema import RemoteConfig
from relaybot.inference.engine import EngineError
from relaybot.inference.remote.failures import (
    TRANSPORT_ERRORS,
    AttemptFailed,
    RemoteRejected,
    backoff_delay,
    error_detail,
    final_error,
    interrupted,
    status_failure,
    transport_failure,
)
from relaybot.inference.remote.network import Network, Transport
from relaybot.inference.remote.responses import (
    MAX_ERROR_BODY_BYTES,
    Fetched,
    Response,
    StreamReader,
    read_json,
    read_stream,
    status_only,
)
from relaybot.inference.remote.target import Target
from relaybot.log import get_logger

log = get_logger(component="engine")

T = TypeVar("T")

SLOT_POLL = 0.05  # how often a request waiting for a slot looks at the interrupt flag
PROBE_TIMEOUT = 5.0  # a start-up probe must not hold the bot up for a whole request timeout
# Idle connections are dropped after this many seconds: under uvicorn's 5 s keep-alive (vLLM,
# `transformers serve`), so that a connection is rarely reused just as the server closes it.
KEEPALIVE_EXPIRY = 4.0


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
        self._http = _http_client(config.max_in_flight, self._ssl, self._network)
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
        def consume(response: Response) -> Any:
            return read_json(response, self.redact)

        return self._call("POST", path, body, "application/json", consume)

    def post_stream(
        self, path: str, body: dict[str, Any], new_reader: Callable[[], StreamReader]
    ) -> Fetched:
        """Stream an answer; reading stops as soon as the reader says it has enough (a stop
        string appeared), which closes the connection and lets the server stop generating."""

        def consume(response: Response) -> Fetched:
            return read_stream(response, new_reader(), self.redact)

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
                    "GET", path, None, "application/json", status_only, timeout=PROBE_TIMEOUT
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
        consume: Callable[[Response], T],
        *,
        timeout: float | None = None,
    ) -> T:
        payload = None if body is None else json.dumps(body).encode()
        limit = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        attempts = 1 if method == "GET" else self.config.retries + 1
        failure: AttemptFailed | None = None
        attempt = 0
        for attempt in range(1, attempts + 1):
            try:
                self._take_slot()
                try:
                    return self._attempt(method, path, payload, accept, consume, limit)
                finally:
                    self._slots.release()
            except AttemptFailed as failed:
                failure = failed
            if self._interrupted.is_set():
                failure = interrupted()
            will_retry = failure.retryable and attempt < attempts
            delay = (
                backoff_delay(self.config.retry_backoff, attempt, failure) if will_retry else None
            )
            self._log_failure(path, failure, attempt, attempts, delay)
            if delay is None:
                break
            if self._interrupted.wait(delay):
                failure = interrupted()
                break
        assert failure is not None
        raise final_error(self.url, failure, attempt)

    def _log_failure(
        self, path: str, failure: AttemptFailed, attempt: int, attempts: int, delay: float | None
    ) -> None:
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

    def _take_slot(self) -> None:
        """Wait for one of the `max_in_flight` slots, shared by every batch of this engine."""
        give_up = self._clock() + self.config.timeout
        while not self._slots.acquire(timeout=SLOT_POLL):
            if self._interrupted.is_set():
                raise interrupted()
            if self._clock() >= give_up:
                raise AttemptFailed(
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
        consume: Callable[[Response], T],
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
                return consume(Response(response))
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, limit, self.redact) from None
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._users_lock:
            if self._interrupted.is_set():
                raise interrupted()
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

    def _status_failure(self, response: httpx.Response) -> AttemptFailed:
        try:
            detail = error_detail(Response(response).body(MAX_ERROR_BODY_BYTES), self.redact)
        except AttemptFailed:
            detail = ""
        return status_failure(response.status_code, detail, response.headers)


def _http_client(
    max_in_flight: int, context: ssl.SSLContext | None, network: Network
) -> httpx.Client:
    """One pool for the client's life: connections are kept alive and reused. It never needs
    more connections than the slots let requests in."""
    pool = httpcore.ConnectionPool(
        ssl_context=context,
        max_connections=max_in_flight,
        max_keepalive_connections=max_in_flight,
        keepalive_expiry=KEEPALIVE_EXPIRY,
        network_backend=network,
    )
    return httpx.Client(
        transport=Transport(pool),
        # No proxies, netrc or SSL_* variables from the environment: the config says
        # where the server is and how to trust it.
        trust_env=False,
        follow_redirects=False,
        # identity: the byte limits in remote_responses then bound what is held in memory.
        headers={"User-Agent": "relaybot", "Accept-Encoding": "identity"},
    )
