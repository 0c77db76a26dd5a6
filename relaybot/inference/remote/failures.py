"""What a failed HTTP attempt means for the remote engines: the kind of failure, whether it is
retried and after how long (backoff, a server's Retry-After), and the EngineError the caller
gets once the attempts are over. Pure policy: the client in remote_http does the talking.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import httpx

from relaybot.inference.engine import EngineError
from relaybot.inference.remote.network import Interrupted, UntrustedCertificate, describe

BACKOFF_CAP = 30.0  # seconds; also caps a server's Retry-After
DETAIL_CHARS = 300

# What each kind of failure says about the server in the final message; "rejected" and
# "interrupted" have messages of their own.
_FINAL_WORDS = {
    "connect": "unreachable",
    "lost": "failed",
    "status": "failed",
    "timeout": "timed out",
    "answer": "sent an unusable answer",
    "busy": "busy",
}
# Kinds whose final message says how many attempts were made.
_COUNTED_KINDS = ("connect", "lost", "status")


class RemoteRejected(EngineError):
    """The server refused the request with a 4xx status that retrying cannot change."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class AttemptFailed(Exception):
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


def interrupted() -> AttemptFailed:
    return AttemptFailed("interrupted", kind="interrupted", retryable=False)


def too_large(limit: int) -> AttemptFailed:
    return AttemptFailed(f"the answer is larger than {limit} bytes", kind="answer", retryable=False)


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


def retry_after(
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


def status_failure(status: int, detail: str, headers: httpx.Headers) -> AttemptFailed:
    """A non-2xx answer: 429 and 5xx are retried (after Retry-After when the server sends
    one), any other status is a rejection."""
    cause = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429 or status >= 500:
        return AttemptFailed(
            cause,
            kind="status",
            retryable=True,
            status=status,
            detail=detail,
            retry_after=retry_after(headers.get("Retry-After"), headers.get("Date")),
        )
    return AttemptFailed(cause, kind="rejected", retryable=False, status=status, detail=detail)


# What an attempt catches from the network layer and httpx; transport_failure says what each means.
TRANSPORT_ERRORS = (
    Interrupted,
    UntrustedCertificate,
    httpx.TimeoutException,
    httpx.TransportError,
    httpx.DecodingError,
    OSError,
)


def transport_failure(exc: Exception, limit: float, redact: Callable[[str], str]) -> AttemptFailed:
    """What one of TRANSPORT_ERRORS, raised during an attempt of at most `limit` seconds,
    means. `redact` keeps the API key out of messages that may quote the request."""
    if isinstance(exc, Interrupted):
        return interrupted()
    if isinstance(exc, UntrustedCertificate):  # configuration: retrying cannot fix it
        return AttemptFailed(str(exc), kind="connect", retryable=False)
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return AttemptFailed(redact(str(exc)), kind="connect", retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        return AttemptFailed(
            f"no complete answer within {limit:g} s", kind="timeout", retryable=False
        )
    if isinstance(exc, httpx.TransportError):
        return AttemptFailed(
            f"connection lost: {redact(describe(exc))}", kind="lost", retryable=True
        )
    if isinstance(exc, httpx.DecodingError):
        return AttemptFailed(
            f"the answer cannot be decoded: {redact(str(exc))}", kind="answer", retryable=False
        )
    # OSError: from the sockets, past httpcore unmapped
    return AttemptFailed(f"connection lost: {describe(exc)}", kind="lost", retryable=True)


def backoff_delay(base: float, attempt: int, failure: AttemptFailed) -> float:
    """Seconds before attempt `attempt + 1`: exponential from `base`, at least what the server
    asked for, at most BACKOFF_CAP."""
    delay = base * 2.0 ** (attempt - 1)
    if failure.retry_after is not None:
        delay = max(delay, failure.retry_after)
    return min(delay, BACKOFF_CAP)


def final_error(url: str, failure: AttemptFailed, attempts: int) -> EngineError:
    """The error a request to `url` ends with after `attempts` attempts, the last `failure`."""
    if failure.kind == "interrupted":
        return EngineError(f"remote request to {url} interrupted (shutting down)")
    if failure.kind == "rejected":
        return RemoteRejected(
            f"remote server {url} rejected the request: {failure.cause}",
            failure.status or 0,
            failure.detail,
        )
    message = f"remote server {url} {_FINAL_WORDS[failure.kind]}: {failure.cause}"
    if failure.kind in _COUNTED_KINDS:
        message += f" ({_attempts(attempts)})"
    return EngineError(message)
