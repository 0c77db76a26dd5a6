"""The remote client's failure policy on its own: what a status or a transport error means,
how long to wait before retrying, and the error a request finally ends with."""

from __future__ import annotations

import httpx
import pytest

from relaybot.inference.engine import EngineError
from relaybot.inference.remote.failures import (
    BACKOFF_CAP,
    DETAIL_CHARS,
    AttemptFailed,
    RemoteRejected,
    backoff_delay,
    error_detail,
    final_error,
    interrupted,
    retry_after,
    status_failure,
    transport_failure,
)
from relaybot.inference.remote.network import Interrupted, UntrustedCertificate

URL = "http://127.0.0.1:8000"


def failure(kind: str = "status", *, retry_after: float | None = None) -> AttemptFailed:
    return AttemptFailed("HTTP 503", kind=kind, retryable=True, retry_after=retry_after)


@pytest.mark.parametrize(
    ("value", "date", "expected"),
    [
        (None, None, None),
        ("", None, None),
        (" 7 ", None, 7.0),
        ("-3", None, 0.0),
        ("soon", None, None),
        ("Wed, 21 Oct 2026 07:28:30 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:29:00 GMT", 0.0),
    ],
)
def test_retry_after_reads_seconds_and_dates_against_the_servers_clock(
    value: str | None, date: str | None, expected: float | None
) -> None:
    assert retry_after(value, date, now=lambda: 0.0) == expected


def test_retry_after_without_a_date_header_uses_our_clock() -> None:
    when = 1_800_000_000.0  # Fri, 15 Jan 2027 08:00:00 GMT
    assert retry_after("Fri, 15 Jan 2027 08:00:00 GMT", None, now=lambda: when - 12) == 12.0


def test_backoff_doubles_honours_retry_after_and_is_capped() -> None:
    assert [backoff_delay(0.5, attempt, failure()) for attempt in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_delay(0.5, 1, failure(retry_after=4.0)) == 4.0
    assert backoff_delay(0.5, 1, failure(retry_after=BACKOFF_CAP * 10)) == BACKOFF_CAP
    assert backoff_delay(1.0, 20, failure()) == BACKOFF_CAP


def test_429_and_5xx_are_retried_other_statuses_rejected() -> None:
    busy = status_failure(429, "slow down", httpx.Headers({"Retry-After": "3"}))
    assert (busy.kind, busy.retryable, busy.retry_after) == ("status", True, 3.0)
    assert busy.cause == "HTTP 429: slow down"
    down = status_failure(502, "", httpx.Headers())
    assert (down.kind, down.retryable, down.retry_after, down.cause) == (
        "status",
        True,
        None,
        "HTTP 502",
    )
    refused = status_failure(422, "unknown field top_k", httpx.Headers({"Retry-After": "3"}))
    assert (refused.kind, refused.retryable, refused.retry_after) == ("rejected", False, None)
    assert (refused.status, refused.detail) == (422, "unknown field top_k")


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (Interrupted(), "interrupted", False),
        (UntrustedCertificate("bad certificate"), "connect", False),
        (httpx.ConnectTimeout("connect timed out"), "connect", True),
        (httpx.ConnectError("refused"), "connect", True),
        (httpx.ReadTimeout("read timed out"), "timeout", False),
        (httpx.RemoteProtocolError("Server disconnected"), "lost", True),
        (httpx.DecodingError("bad chunk"), "answer", False),
        (ConnectionResetError(104, "Connection reset by peer"), "lost", True),
    ],
)
def test_transport_errors_map_to_failure_kinds(exc: Exception, kind: str, retryable: bool) -> None:
    failed = transport_failure(exc, 2.5, str)
    assert (failed.kind, failed.retryable) == (kind, retryable)


def test_transport_failure_messages_are_redacted() -> None:
    failed = transport_failure(httpx.ConnectError("no route to sk-secret"), 1, lambda t: "***")
    assert failed.cause == "***"
    timed_out = transport_failure(httpx.ReadTimeout("slow"), 2.5, str)
    assert timed_out.cause == "no complete answer within 2.5 s"


def test_final_errors_name_the_server_and_count_attempts() -> None:
    assert str(final_error(URL, interrupted(), 1)) == (
        f"remote request to {URL} interrupted (shutting down)"
    )
    lost = AttemptFailed("connection lost: reset", kind="lost", retryable=True)
    assert (
        str(final_error(URL, lost, 1))
        == f"remote server {URL} failed: connection lost: reset (1 attempt)"
    )
    connect = AttemptFailed("refused", kind="connect", retryable=True)
    assert str(final_error(URL, connect, 3)).endswith("unreachable: refused (3 attempts)")
    timeout = AttemptFailed("no answer", kind="timeout", retryable=False)
    assert str(final_error(URL, timeout, 1)) == f"remote server {URL} timed out: no answer"
    rejected = final_error(
        URL, AttemptFailed("HTTP 400", kind="rejected", retryable=False, status=400, detail="x"), 1
    )
    assert isinstance(rejected, RemoteRejected) and isinstance(rejected, EngineError)
    assert (rejected.status, rejected.detail) == (400, "x")


def test_error_detail_digs_into_json_and_shortens() -> None:
    body = b'{"error": {"message": "model  not\\nfound", "code": 404}}'
    assert error_detail(body) == "model not found"
    assert error_detail(b'{"detail": [{"loc": ["body"], "msg": "bad"}]}') == (
        '[{"loc": ["body"], "msg": "bad"}]'
    )
    long = error_detail(b"x" * 1000)
    assert len(long) == DETAIL_CHARS and long.endswith("…")
    assert error_detail(b"key sk-1 leaked", lambda t: t.replace("sk-1", "***")) == "key *** leaked"
