"""Tests for relaybot.inference.remote.http: retries, timeouts, slots, connections, interrupts."""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.schema import Secret
from relaybot.inference.engine import EngineError
from tests.support.remote_server import (
    HOST,
    KEY,
    Handler,
    Script,
    Seen,
    answer_with,
    chunk,
    closed_port,
    completion,
    numbered,
    openai,
    request,
    slow_echo,
    status,
)

# --- retries, timeouts, failures ----------------------------------------------------------


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


# --- the bound on requests in flight ------------------------------------------------------


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


# --- connections --------------------------------------------------------------------------


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


# --- interruption -------------------------------------------------------------------------


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


# --- secrets ------------------------------------------------------------------------------


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
