"""A one-connection scripted IRC server for protocol tests (SASL, garbage input)."""

from __future__ import annotations

import socket
import ssl
import time


class ScriptedServer:
    """A one-connection IRC 'server' that sends whatever bytes the test scripts; with `tls`,
    each accepted connection does the TLS handshake first."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.conn: socket.socket | None = None
        self._buffer = b""

    def accept(self, timeout: float = 20.0) -> None:
        self.listener.settimeout(timeout)
        conn, _ = self.listener.accept()
        if self.tls is not None:
            conn.settimeout(timeout)
            conn = self.tls.wrap_socket(conn, server_side=True)
        self.conn = conn
        self.conn.settimeout(0.2)
        self._buffer = b""  # a new connection: a partial line of the last one is no start

    def wait_closed(self, timeout: float) -> None:
        """Read until the bot closes this connection (its lines still land in `received`)."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return  # reset: closed all the same
            if not data:
                return
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\r\n")
            self.received.extend(lines)
        raise AssertionError(f"the connection is still open; got {self.received[-10:]!r}")

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def wait_for(self, needle: bytes, timeout: float) -> bytes:
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.received:
                if needle in line:
                    return line
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\r\n")
            self.received.extend(lines)
            for line in lines:
                # Like any server, confirm the bot's delivery checks (relaybot.irc.delivery);
                # its liveness PINGs stay the script's business.
                if line.startswith(b"PING :relaybot-ack-"):
                    self.conn.sendall(b":irc.test PONG irc.test :" + line[6:] + b"\r\n")
        raise AssertionError(f"{needle!r} not received; got {self.received[-10:]!r}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
