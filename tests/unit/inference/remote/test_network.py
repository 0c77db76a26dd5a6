"""Tests for relaybot.inference.remote.network: name lookups and TLS handshakes under deadlines."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import pytest

from relaybot.inference.engine import EngineError
from tests.support.remote_server import HOST, openai, request, tgi


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
