"""The socket side of a connection: an `irc` library ServerConnection that opens with CAP LS
302, reads without blocking (TLS records included), survives bad input and hands each parsed
line to one callback."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

import irc.client
from jaraco.stream.buffer import LenientDecodingLineBuffer

from relaybot.config.schema import IrcConfig
from relaybot.irc import message as ircmsg
from relaybot.irc import tls
from relaybot.irc.numerics import RPL_ISUPPORT, RPL_WELCOME
from relaybot.irc.outbox import MAX_LINE_BYTES
from relaybot.log import get_logger

log = get_logger(component="session")

# A server line longer than this without a newline is garbage; drop it instead of buffering.
MAX_BUFFERED_BYTES = 64 * 1024
# How long one write may wait for the kernel to take a line. A peer that takes nothing for
# this long is a dead link; the PING check alone would need ping_interval + ping_timeout.
SEND_TIMEOUT = 10.0


class BotConnection(irc.client.ServerConnection):  # type: ignore[misc]
    """A ServerConnection that registers the IRCv3 way and survives bad input."""

    buffer_class = LenientDecodingLineBuffer
    on_data: Callable[[], None] | None = None  # any bytes from the server: the link is alive
    on_message: Callable[[ircmsg.IrcMessage], None] | None = None  # each parsed server line
    _discarding = False

    def connect(
        self,
        server: str,
        port: int,
        nickname: str,
        *,
        username: str,
        ircname: str,
        password: str | None,
        connect_factory: Callable[[tuple[str, int]], Any],
        registration_lines: list[str],
    ) -> BotConnection:
        if self.is_connected():
            self.disconnect("Changing servers")
        self.buffer = self.buffer_class()
        # A line being discarded belonged to the old connection: the new one starts clean.
        self._discarding = False
        self.handlers: dict[str, Any] = {}
        self.real_server_name = ""
        self.real_nickname = nickname
        self.server, self.port = server, port
        self.server_address = (server, port)
        self.nickname, self.username, self.ircname = nickname, username, ircname
        self.password = password
        self.connect_factory = connect_factory
        self.sasl_login = None
        try:
            self.socket = connect_factory(self.server_address)
        except OSError as exc:
            raise irc.client.ServerConnectionError(f"Couldn't connect to socket: {exc}") from exc
        # Non-blocking reads: select() may report a TLS socket readable when only part of a
        # record has arrived, and a blocking read would then wait for the rest forever.
        self.socket.settimeout(0.0)
        self.connected = True
        self.reactor._on_connect(self.socket)
        # CAP LS before NICK/USER so the server holds registration until CAP END.
        self.send_raw("CAP LS 302")
        if password:
            self.send_raw(f"PASS :{password}")
        for line in registration_lines:
            self.send_raw(line)
        return self

    def send_raw(self, string: str) -> bool:
        """Write one line. Never raises: a line that cannot be written (no connection, a
        write error, a peer that takes nothing for SEND_TIMEOUT) is False, and a failed
        write drops the connection, which the session turns into a reconnect."""
        sock = self.socket
        if sock is None:
            log.info("line_not_sent", reason="not connected", command=string.split(" ", 1)[0])
            return False
        data = string.encode("utf-8", "replace") + b"\r\n"
        if len(data) > MAX_LINE_BYTES or any(c in string for c in "\r\n\0"):
            # Callers split and sanitise; this is the last guard, not a path.
            log.error("line_not_sent", reason="malformed", command=string.split(" ", 1)[0])
            return False
        try:
            # While disconnecting (the QUIT), do not wait on a link that already failed.
            sock.settimeout(SEND_TIMEOUT if self.connected else 0.5)
            sock.sendall(data)
        except (OSError, ValueError) as exc:
            if self.connected:
                log.warning("write_failed", error=str(exc) or type(exc).__name__)
                self.disconnect("Connection lost")
            return False
        finally:
            with contextlib.suppress(OSError, ValueError):
                sock.settimeout(0.0)
        return True

    def process_data(self) -> None:
        data = b""
        try:
            reader = getattr(self.socket, "read", self.socket.recv)
            data = reader(2**14)
            # TLS may hold more decrypted bytes than select() can see.
            while isinstance(self.socket, ssl.SSLSocket) and self.socket.pending():
                data += self.socket.read(self.socket.pending())
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            # Part of a TLS record, or nothing after all: wait for the rest. A peer that
            # never sends it is caught by the PING check, not by a blocked thread.
            if not data:
                return
        except (OSError, ValueError):
            self.disconnect("Connection reset by peer")
            return
        if not data:
            self.disconnect("Connection reset by peer")
            return
        if self.on_data is not None:
            self.on_data()
        if self._discarding:
            # The tail of a line too long to keep: it ends at the next newline.
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._discarding = False
        self.buffer.feed(data)
        for line in self.buffer:
            if not self.connected:
                break  # a handler's write failed: the rest belongs to a dead connection
            if not line.strip():
                continue
            try:
                self._process_line(line)
            except Exception:  # one bad line must not lose the rest of the read
                log.warning("line_handling_failed", line=line[:200], exc_info=True)
        if len(self.buffer.buffer) > MAX_BUFFERED_BYTES:
            log.warning("line_too_long_dropped", bytes=len(self.buffer.buffer))
            self.buffer.buffer = b""
            self._discarding = True

    def _process_line(self, line: str) -> None:
        """Parse with relaybot.irc.message (it follows the community's parser test vectors)
        instead of the library's regular expression, keep the library's view of our nick and
        of ISUPPORT current, and hand the message to `on_message`."""
        message = ircmsg.parse(line)
        if message is None:
            log.info("line_unparsable", line=line[:200])
            return
        command, params, source = message.command, message.params, message.source
        if command in ("PRIVMSG", "NOTICE") and len(params) < 2:
            log.info("line_unparsable", line=line[:200])
            return
        if source and not self.real_server_name:
            self.real_server_name = source
        if command == "NICK" and source and params:
            if source.partition("!")[0] == self.real_nickname:
                self.real_nickname = params[0]
        elif command == RPL_WELCOME and params:
            self.real_nickname = params[0]
        elif command == RPL_ISUPPORT:
            self.features.load(list(params))
        if self.on_message is not None:
            self.on_message(message)


def make_connect_factory(config: IrcConfig) -> Callable[[tuple[str, int]], socket.socket]:
    """TCP (and TLS) connects as configured; raises TlsSetupError for bad TLS files."""
    return tls.make_connector(config)
