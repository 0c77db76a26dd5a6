"""A loopback TCP proxy for link-fault tests: it forwards a client (the bot) to a target
server and, when told, breaks the links it holds in one of a few ways.

Each accepted connection is a `_Link` with two pump threads, one per direction. A fault
applies to the links open at the moment it is asked for; a connection accepted afterwards is
forwarded normally, so a client that reconnects through the proxy gets a working link.

Faults:

* `reset()`: both sides of every open link are closed with an RST (SO_LINGER 0).
* `freeze()`: nothing more is read or written in either direction, and nothing is closed,
  until `close()` (the bytes a client writes afterwards sit unread in the kernel).
* `drip(seconds_per_byte)`: server -> client goes one byte at a time with that pause;
  `resume()` returns to normal forwarding.
* `inject_to_client(data)`: extra bytes to the client, written between two server lines.

Everything is bounded: all threads are daemons that look at their stop flag at least every
POLL seconds, sockets are non-blocking, and `close()` stops and joins them. Standard library
only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque

POLL = 0.05  # seconds; the longest any proxy thread waits before it looks at its flags
JOIN_TIMEOUT = 5.0


def rst_close(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Injection:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.done = threading.Event()


class _Link:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        for sock in (client, upstream):
            sock.setblocking(False)
        self.stop = threading.Event()  # the pumps end (close, reset, a socket error)
        self.frozen = threading.Event()
        self.drip_delay: float | None = None  # seconds per byte, server -> client
        self.injections: deque[_Injection] = deque()
        self.to_client = 0  # bytes forwarded server -> client (injections not counted)
        self.to_server = 0  # bytes forwarded client -> server
        self._at_line_start = True  # the last byte forwarded to the client was a newline
        self._lock = threading.Lock()
        self._ended = 0  # pumps that have returned
        self._controlled = False  # reset() or shut() closes the sockets, not the pumps
        self.closed = False
        self.threads = [
            threading.Thread(
                target=self._pump, args=(client, upstream, False), daemon=True, name="proxy-c2s"
            ),
            threading.Thread(
                target=self._pump, args=(upstream, client, True), daemon=True, name="proxy-s2c"
            ),
        ]
        for thread in self.threads:
            thread.start()

    # --- pumping -----------------------------------------------------------------------------

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            self._pump_loop(src, dst, to_client)
        except (OSError, ValueError):
            self.stop.set()  # a socket error (reset by a peer, closed): the link is over
        finally:
            with self._lock:
                self._ended += 1
                last = self._ended == len(self.threads)
            if last and not self._controlled:
                self.close_sockets(rst=False)

    def _pump_loop(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        while not self.stop.is_set():
            if self.frozen.is_set():
                self.stop.wait(POLL)
                continue
            if to_client and self.injections and self._at_line_start:
                injection = self.injections[0]
                if self._write(dst, injection.data, to_client=False):
                    self.injections.popleft()
                    injection.done.set()
                continue
            readable, _, _ = select.select([src], [], [], POLL)
            if not readable:
                continue
            delay = self.drip_delay if to_client else None
            try:
                data = src.recv(1 if delay is not None else 65536)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:  # EOF: pass the half-close on, keep the other direction going
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if not self._write(dst, memoryview(data), to_client=to_client):
                return
            if delay is not None:
                self.stop.wait(delay)

    def _write(self, dst: socket.socket, data: memoryview, *, to_client: bool) -> bool:
        """Write all of data unless the link stops; True when all of it went."""
        while data:
            if self.stop.is_set():
                return False
            if self.frozen.is_set():
                self.stop.wait(POLL)
                continue
            _, writable, _ = select.select([], [dst], [], POLL)
            if not writable:
                continue
            try:
                sent = dst.send(data[:65536])
            except (BlockingIOError, InterruptedError):
                continue
            if to_client:
                self.to_client += sent
                self._at_line_start = data[sent - 1] == 0x0A  # a newline
            elif dst is self.upstream:
                self.to_server += sent
            data = data[sent:]
        return True

    # --- control -----------------------------------------------------------------------------

    def join(self) -> None:
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT)

    def close_sockets(self, *, rst: bool) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if rst:
                rst_close(sock)
            else:
                sock.close()

    def reset(self) -> None:
        # The pumps end first, so that no thread still uses a socket being closed.
        self._controlled = True
        self.stop.set()
        self.join()
        self.close_sockets(rst=True)

    def shut(self) -> None:
        self._controlled = True
        self.stop.set()
        self.join()
        self.close_sockets(rst=False)


class FaultProxy:
    """Listens on 127.0.0.1:0 and forwards every connection to (host, port)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.host = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0  # connections accepted, all time
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="proxy-accept")
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener], [], [], POLL)
            if not readable:
                continue
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                rst_close(client)
                continue
            with self._lock:
                if self._stop.is_set():
                    client.close()
                    upstream.close()
                    return
                self.accepted += 1
                self._links.append(_Link(self, client, upstream))

    def _open_links(self) -> list[_Link]:
        with self._lock:
            return [link for link in self._links if not link.stop.is_set()]

    def wait_for_connections(self, count: int, timeout: float) -> None:
        """Wait until `count` connections were accepted in all."""
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.accepted} of {count} connections in {timeout} s")
            time.sleep(POLL)

    # --- faults --------------------------------------------------------------------------------

    def reset(self) -> int:
        """RST both sides of every open link; returns how many links that was."""
        links = self._open_links()
        for link in links:
            link.reset()
        return len(links)

    def freeze(self) -> int:
        """Stop forwarding on every open link, in both directions, without closing it."""
        links = self._open_links()
        for link in links:
            link.frozen.set()
        return len(links)

    def drip(self, seconds_per_byte: float) -> int:
        """Forward server -> client one byte per `seconds_per_byte` on every open link."""
        links = self._open_links()
        for link in links:
            link.drip_delay = seconds_per_byte
        return len(links)

    def resume(self) -> int:
        """Undo drip() on the open links (a frozen link stays frozen)."""
        links = self._open_links()
        for link in links:
            link.drip_delay = None
        return len(links)

    def inject_to_client(self, data: bytes, timeout: float = 60.0) -> bool:
        """Send `data` to the client of every open link, between two server lines, and wait
        until it was all written; False when that did not happen within `timeout`."""
        injections = []
        for link in self._open_links():
            injection = _Injection(data)
            link.injections.append(injection)
            injections.append((link, injection))
        deadline = time.monotonic() + timeout
        for link, injection in injections:
            # A link that ends meanwhile (reset, closed by a peer) never finishes its injection.
            while not injection.done.wait(POLL):
                if link.stop.is_set() or time.monotonic() >= deadline:
                    return False
        return bool(injections)

    def bytes_to_client(self) -> int:
        with self._lock:
            return sum(link.to_client for link in self._links)

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, end every link (frozen ones too) and join all threads."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.shut()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def tls_handshake(
    raw: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
) -> None:
    """Server side of a TLS handshake over memory BIOs, so that a test controls every byte
    that goes out afterwards (half a record, say)."""
    for _ in range(50):
        try:
            tls.do_handshake()
            raw.sendall(outgoing.read())
            return
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                raw.sendall(pending)
            data = raw.recv(65536)
            if not data:
                raise ConnectionError("closed during the handshake") from None
            incoming.write(data)
    raise ConnectionError("handshake did not finish")
