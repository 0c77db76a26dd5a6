"""The network layer under httpx for the remote engines: an httpcore backend whose DNS, connect
and TLS handshake share one connect budget, whose reads and writes end by the attempt's deadline,
and whose sockets `shutdown_all` can wake; and the httpx transport that runs over it."""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

DNS_POLL = 0.05  # how often a thread waiting for DNS looks at the interrupt flag


class Interrupted(Exception):
    """`interrupt` was called while this thread was using the network (or about to)."""


class UntrustedCertificate(Exception):
    """The server's TLS certificate failed verification: configuration, which retrying cannot
    fix."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "the server closed the connection"
    if isinstance(exc, BrokenPipeError):
        return "the server stopped reading"
    if isinstance(exc, httpx.RemoteProtocolError):
        # httpcore's wording for the two ways a server goes away mid-exchange.
        text = str(exc)
        if text.startswith("Server disconnected"):
            return "the server closed the connection"
        if text.startswith("peer closed connection without sending complete message body"):
            return "the answer was cut off"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc).rstrip(".") or type(exc).__name__


@dataclass(slots=True)
class _Deadline:
    """The attempt running on a thread: when it must be over, and when connecting must be."""

    ends: float
    connect_ends: float | None = None


class Network(httpcore.NetworkBackend):
    """httpcore's network backend for one client, in place of its own: httpcore's connect
    timeout leaves DNS unbounded and gives every resolved address the whole timeout again.
    Connections are made and used on the thread of the attempt that needs them, so the
    attempt's deadline is found in a thread-local."""

    def __init__(self, clock: Callable[[], float], interrupted: threading.Event) -> None:
        self._clock = clock
        self._interrupted = interrupted
        self._local = threading.local()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    @contextlib.contextmanager
    def deadline(self, limit: float) -> Iterator[None]:
        """Everything this thread does on the network until the block ends takes at most
        `limit` seconds in all."""
        self._local.current = _Deadline(self._clock() + limit)
        try:
            yield
        finally:
            self._local.current = None

    def left(self, timeout: float | None, *, connecting: bool = False) -> float | None:
        """httpx's `timeout` for one operation, cut to what the attempt has left."""
        if self._interrupted.is_set():
            raise Interrupted
        current: _Deadline | None = getattr(self._local, "current", None)
        if current is None:
            return timeout
        ends = current.ends
        if connecting and current.connect_ends is not None:
            ends = min(ends, current.connect_ends)
        left = ends - self._clock()
        return left if timeout is None else min(timeout, left)

    def shutdown_all(self) -> None:
        """Wake every thread blocked on one of these sockets (closing them is theirs to do)."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def remember(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.add(sock)

    def forget(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)

    # --- httpcore.NetworkBackend ---------------------------------------------------------

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        budget = self.left(timeout)
        ends = None if budget is None else self._clock() + budget
        current: _Deadline | None = getattr(self._local, "current", None)
        if current is not None:
            current.connect_ends = ends  # the TLS handshake, if any, is part of connecting
        shown = timeout if timeout is not None else budget  # the configured figure
        within = "" if shown is None else f" within {max(shown, 0.0):g} s"
        addresses = self._resolve(host, port, ends, within)
        cause = "no address"
        timed_out = False
        for index, (family, kind, proto, _name, address) in enumerate(addresses):
            left = None if ends is None else ends - self._clock()
            if left is not None and left <= 0:
                timed_out = True
                break
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:  # an address family this machine lacks
                timed_out = False
                cause = describe(exc)
                continue
            self.remember(sock)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                if local_address is not None:
                    sock.bind((local_address, 0))
                # The addresses share the budget: one that does not answer leaves time for
                # the others.
                sock.settimeout(None if left is None else left / (len(addresses) - index))
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except TimeoutError:
                timed_out = True
            except OSError as exc:
                timed_out = False
                cause = describe(exc)
            else:
                return _Stream(self, sock)
            self.forget(sock)
            sock.close()
            if self._interrupted.is_set():
                raise Interrupted
        if timed_out:
            raise httpcore.ConnectTimeout(f"no connection{within}")
        raise httpcore.ConnectError(cause)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise NotImplementedError("remote servers are reached over TCP")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _resolve(
        self, host: str, port: int, ends: float | None, within: str
    ) -> list[tuple[Any, ...]]:
        """getaddrinfo with a deadline: it has no timeout of its own, so a name is looked up
        on a helper thread that is left behind if the answer comes too late."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # nothing to look up
            try:
                return list(
                    socket.getaddrinfo(
                        host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
                    )
                )
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot use address {host}: {describe(exc)}") from None
        answer: queue.SimpleQueue[list[tuple[Any, ...]] | OSError] = queue.SimpleQueue()

        def look_up() -> None:
            try:
                answer.put(list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
            except OSError as exc:
                answer.put(exc)

        threading.Thread(target=look_up, name="relaybot-dns", daemon=True).start()
        while True:
            wait = DNS_POLL if ends is None else min(DNS_POLL, ends - self._clock())
            if wait <= 0:
                raise httpcore.ConnectTimeout(f"cannot resolve {host}{within}")
            try:
                found = answer.get(timeout=wait)
            except queue.Empty:
                if self._interrupted.is_set():
                    raise Interrupted from None
                continue
            if isinstance(found, socket.gaierror):
                raise httpcore.ConnectError(f"cannot resolve {host}: {found.strerror}")
            if isinstance(found, OSError):
                raise httpcore.ConnectError(f"cannot resolve {host}: {describe(found)}")
            return found


class _Stream(httpcore.NetworkStream):
    """One connection's socket: every read and write bounded by the attempt's deadline."""

    def __init__(self, network: Network, sock: socket.socket) -> None:
        self._network = network
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = self._network.left(timeout)
        if left is not None and left <= 0:
            raise httpcore.ReadTimeout("the deadline passed")
        try:
            self._sock.settimeout(left)
            return self._sock.recv(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("no data in time") from None
        except OSError as exc:
            raise httpcore.ReadError(describe(exc)) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        left = self._network.left(timeout)
        if left is not None and left <= 0:
            raise httpcore.WriteTimeout("the deadline passed")
        try:
            self._sock.settimeout(left)
            self._sock.sendall(buffer)
        except TimeoutError:
            raise httpcore.WriteTimeout("the server did not take the request in time") from None
        except OSError as exc:
            raise httpcore.WriteError(describe(exc)) from None

    def close(self) -> None:
        self._network.forget(self._sock)
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._network.left(timeout, connecting=True)
        try:
            wrapped = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as exc:
            self.close()
            raise httpcore.ConnectError(f"TLS setup failed: {describe(exc)}") from None
        # The plain socket is detached now; the TLS one is registered before the handshake,
        # so that interrupt() can cut that short too.
        self._network.forget(self._sock)
        self._network.remember(wrapped)
        try:
            if left is not None and left <= 0:
                raise TimeoutError
            wrapped.settimeout(left)
            wrapped.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            self._network.forget(wrapped)
            wrapped.close()
            raise UntrustedCertificate(
                f"TLS certificate verification failed: {exc.verify_message or exc}"
            ) from None
        except TimeoutError:
            self._network.forget(wrapped)
            wrapped.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except OSError as exc:  # ssl.SSLError included
            self._network.forget(wrapped)
            wrapped.close()
            raise httpcore.ConnectError(f"TLS handshake failed: {describe(exc)}") from None
        return _Stream(self._network, wrapped)

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            # Asked of an idle kept-alive connection before it is reused: readable means
            # the server closed it (or sent something it should not have).
            if self._sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


# httpcore's exceptions and the httpx ones they become, the most specific first.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _HTTPX_ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self._response.iter_stream()

    def close(self) -> None:
        with _as_httpx_errors():
            self._response.close()


class Transport(httpx.BaseTransport):
    """httpx's transport over an httpcore pool of our own: what httpx.HTTPTransport does, with
    the network backend `Network` (httpx 0.28 has no option to pass one)."""

    def __init__(self, pool: httpcore.ConnectionPool) -> None:
        self._pool = pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = self._pool.handle_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
