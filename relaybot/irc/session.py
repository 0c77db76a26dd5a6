"""The IRC session: the only place with `irc` library callbacks.

Owns the connection (TCP/TLS, registration, CAP LS 302, SASL PLAIN, nick collisions), the
channel list (configured, invited, kicked), paced sending, reconnects, and the reactor loop.
Wire events become `relaybot.irc.events` values handed to the relay.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import irc.client
import irc.events
from jaraco.stream.buffer import LenientDecodingLineBuffer

from relaybot.config.schema import ChannelConfig, IrcConfig
from relaybot.irc import message as ircmsg
from relaybot.irc import tls
from relaybot.irc.delivery import Delivery
from relaybot.irc.events import (
    Action,
    Invite,
    IrcEvent,
    Join,
    Kick,
    Message,
    Names,
    NickChange,
    Origin,
    Part,
    Quit,
    StatusChange,
    Topic,
)
from relaybot.irc.outbox import MAX_LINE_BYTES, Outbox, Outgoing
from relaybot.irc.reconnect import Backoff, Liveness
from relaybot.irc.text import (
    casefold,
    is_channel_name,
    privmsg_payload_budget,
    reply_lines,
    safe_line,
)
from relaybot.log import get_logger
from relaybot.policy.permissions import glob_match

log = get_logger(component="session")

WANTED_CAPS = (
    "sasl",
    "server-time",
    "message-tags",
    "account-tag",
    "extended-join",
    "account-notify",
    "multi-prefix",
    "away-notify",
    "chghost",
    "cap-notify",
    "invite-notify",
    "userhost-in-names",
    "echo-message",
)
NICK_REGAIN_INTERVAL = 60.0
# Message tags that mark the sender as a bot: the IRCv3 tag, its draft name, InspIRCd 3's.
BOT_TAGS = frozenset({"bot", "draft/bot", "inspircd.org/bot"})
WHOX_TOKEN = "171"
MAX_TRACKED_USERS = 50_000
SASL_CHUNK = 400
# A server line longer than this without a newline is garbage; drop it instead of buffering.
MAX_BUFFERED_BYTES = 64 * 1024
# How long one write may wait for the kernel to take a line. A peer that takes nothing for
# this long is a dead link; the PING check alone would need ping_interval + ping_timeout.
SEND_TIMEOUT = 10.0
# Lines one send_message/send_notice may become when its text is longer than a line.
MAX_LINES_PER_TEXT = 8
_CHANNEL_GONE = {
    "bannedfromchan": "banned",
    "inviteonlychan": "invite only",
    "badchannelkey": "bad key",
    "channelisfull": "full",
}


class BotConnection(irc.client.ServerConnection):  # type: ignore[misc]
    """A ServerConnection that registers the IRCv3 way and survives bad input."""

    buffer_class = LenientDecodingLineBuffer
    on_data: Callable[[], None] | None = None  # any bytes from the server: the link is alive
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
        """The library's dispatch, fed by relaybot.irc.message's parser (which follows the
        community's parser test vectors) instead of the library's regular expression."""
        message = ircmsg.parse(line)
        if message is None:
            log.info("line_unparsable", line=line[:200])
            return
        self._handle_event(
            irc.client.Event("all_raw_messages", self.get_server_name(), None, [line])
        )
        source = irc.client.NickMask(message.source) if message.source else None
        command = irc.events.Command.lookup(message.command)
        arguments = list(message.params)
        tags = [{"key": k, "value": v or None} for k, v in message.tags.items()] or None
        if command == "quit" and not arguments:
            arguments = [""]  # a QUIT without a reason is legal; the library wants one
        if command in ("privmsg", "notice") and len(arguments) < 2:
            log.info("line_unparsable", line=line[:200])
            return
        if source and not self.real_server_name:
            self.real_server_name = source
        if command == "nick" and source is not None and arguments:
            if source.nick == self.real_nickname:
                self.real_nickname = arguments[0]
        elif command == "welcome" and arguments:
            self.real_nickname = arguments[0]
        elif command == "featurelist":
            self.features.load(arguments)
        handler = self._handle_message if command in ("privmsg", "notice") else self._handle_other
        handler(arguments, command, source, tags)


def make_connect_factory(config: IrcConfig) -> Callable[[tuple[str, int]], socket.socket]:
    """TCP (and TLS) connects as configured; raises TlsSetupError for bad TLS files."""
    return tls.make_connector(config)


@dataclass(slots=True)
class _Channel:
    name: str
    key: str | None
    joined: bool = False


class IrcSession:
    """Implements the relay's Sender; call `run()` on the thread that owns the bot."""

    def __init__(
        self,
        config: IrcConfig,
        *,
        on_event: Callable[[IrcEvent], None],
        on_forget: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.on_event = on_event
        self.on_forget = on_forget
        self.clock = clock
        flood = config.flood
        self.outbox = (
            outbox
            if outbox is not None
            else Outbox(
                burst=flood.burst,
                interval=flood.interval,
                bytes_per_second=flood.bytes_per_second,
                max_queued=flood.max_queued,
            )
        )
        self.delivery = Delivery()
        self._ack_item: Outgoing | None = None
        self.reactor = irc.client.Reactor()
        self.reactor.connection_class = BotConnection
        self.connection: BotConnection = self.reactor.server()
        self.reactor.add_global_handler("all_events", self._dispatch, -10)
        # The library's own PONG echoes the token unsanitised (a CR in it is a second line).
        self.reactor.remove_global_handler("ping", irc.client._ping_ponger)
        self.channels: dict[str, _Channel] = {}
        for channel in config.channels:
            self._want(channel)
        self.registered = False
        self._caps_offered: dict[str, str] = {}
        self._caps_enabled: set[str] = set()
        self._cap_ended = False
        self._nick_candidates: list[str] = []
        self._own_user: str | None = None
        self._own_host: str | None = None
        self._stop = threading.Event()
        self._quit_message = "relaybot shutting down"
        # A deque, not a queue.Queue: append and popleft take no Python-level lock, so
        # call_soon is safe from a signal handler that interrupted this very loop.
        self._completions: collections.deque[Callable[[], None]] = collections.deque()
        # Another thread's call_soon writes a byte here so that the loop wakes at once instead
        # of at the end of its select timeout (up to 50 ms added to every reply otherwise).
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self.servers = [(config.host, config.port), *config.fallback_servers]
        self._server_index = 0
        self.backoff = Backoff(
            config.reconnect_min, config.reconnect_max, stable_after=config.stable_after
        )
        self.liveness = Liveness(config.ping_interval, config.ping_timeout)
        self._connected_since: float | None = None
        self._reconnect_pending = False
        self._next_nick_try = 0.0
        self.log = log.bind(network=config.network)
        self.on_registered: Callable[[], None] | None = None
        self.on_joined: Callable[[str], None] | None = None
        # What the server told us about users: services accounts (extended-join,
        # account-notify, WHOX) and bot mode (WHO flags), by casefolded nick.
        self.accounts: dict[str, str | None] = {}
        self.bots: set[str] = set()
        self._whox = False
        self._bot_mode_set = False
        self.connects = 0  # successful TCP/TLS connects, for status and tests
        self.connection.on_data = lambda: self.liveness.heard(self.clock())
        self._connector = make_connect_factory(config)  # bad TLS files fail here, at start
        self.started_at = time.time()

    # --- Sender -----------------------------------------------------------------------------

    @property
    def nick(self) -> str:
        return str(self.connection.real_nickname or self.config.nick)

    @property
    def casemapping(self) -> str:
        value = getattr(self.connection.features, "casemapping", "rfc1459")
        return value if isinstance(value, str) else "rfc1459"

    def payload_budget(self, target: str) -> int:
        return privmsg_payload_budget(self.nick, target, self._own_user, self._own_host)

    def send_message(
        self,
        target: str,
        text: str,
        *,
        action: bool = False,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[], object] | None = None,
    ) -> None:
        """Queue `text` as PRIVMSG lines: sanitised, and split where it is longer than a line.
        `on_sent` runs once the last of them is written; `on_lost` if the connection then
        dies before the server confirmed them (see relaybot.irc.delivery)."""
        self._queue_text("PRIVMSG", target, text, on_sent, on_lost, action=action)

    def send_notice(self, target: str, text: str) -> None:
        self._queue_text("NOTICE", target, text, None, None)

    def _queue_text(
        self,
        command: str,
        target: str,
        text: str,
        on_sent: Callable[[], None] | None,
        on_lost: Callable[[], object] | None,
        *,
        action: bool = False,
    ) -> None:
        target = safe_line(target).split(" ")[0]
        if not _single_target(target):
            return
        wrapper = ("\x01ACTION ", "\x01") if action else ("", "")
        # NOTICE is shorter than PRIVMSG, so the PRIVMSG budget fits both.
        budget = self.payload_budget(target) - len("".join(wrapper))
        if budget < 16:
            self.log.warning("line_dropped_target_too_long", target=target[:64])
            return
        pieces = reply_lines(text, budget, MAX_LINES_PER_TEXT)
        folded = self._fold(target)
        for index, piece in enumerate(pieces):
            line = f"{command} {target} :{wrapper[0]}{piece}{wrapper[1]}"
            if index < len(pieces) - 1:
                self._queue(Outgoing(line, target=folded))
            else:  # the last piece confirms the ones before it
                self._queue(Outgoing(line, on_sent, folded, on_lost))

    def _queue(self, item: Outgoing) -> None:
        if not (self.registered and self.connection.is_connected()):
            # Never held for a later connection: the channel may not be ours by then.
            self.log.warning("line_dropped_disconnected", channel=item.target)
            return
        if not self.outbox.push(item):
            self.log.warning("outbox_full_line_dropped", channel=item.target)

    def drop_queued(self, target: str) -> int:
        return len(self.outbox.drop_target(self._fold(target)))

    # --- cross-thread hand-over --------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Thread-safe and signal-safe: run `fn` on the reactor thread at the next loop turn."""
        self._completions.append(fn)
        # A full pipe means a wake-up is pending anyway; a closed one, that we are stopping.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def stop(self, message: str = "relaybot shutting down") -> None:
        """Thread-safe and signal-safe: ask the loop to QUIT and return."""
        self._quit_message = message
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    # --- channels -----------------------------------------------------------------------------

    def _fold(self, name: str) -> str:
        return casefold(name, self.casemapping)

    def _want(self, channel: ChannelConfig) -> None:
        key = channel.key.value if channel.key else None
        self.channels[self._fold(channel.name)] = _Channel(channel.name, key)

    def join(self, name: str, key: str | None = None) -> None:
        self.channels.setdefault(self._fold(name), _Channel(name, key))
        if self.registered:
            self._send_raw(f"JOIN {name} {key}" if key else f"JOIN {name}")

    def part(self, name: str, reason: str = "") -> None:
        self.channels.pop(self._fold(name), None)
        self.drop_queued(name)
        if self.registered:
            self._send_raw(f"PART {name} :{reason}" if reason else f"PART {name}")

    def wanted_channels(self) -> list[str]:
        return [channel.name for channel in self.channels.values()]

    def joined_channels(self) -> list[str]:
        return [channel.name for channel in self.channels.values() if channel.joined]

    def _forget(self, name: str, why: str) -> None:
        self.channels.pop(self._fold(name), None)
        self.log.info("channel_forgotten", channel=name, reason=why)
        self.on_forget(name)

    # --- connection ----------------------------------------------------------------------------

    def connect(self) -> None:
        nick = self.config.nick
        self._nick_candidates = [*self.config.alt_nicks]
        self.registered = False
        self._caps_offered.clear()
        self._caps_enabled.clear()
        self._cap_ended = False
        self._whox = False
        self._bot_mode_set = False
        self.accounts.clear()
        self.bots.clear()
        for channel in self.channels.values():
            channel.joined = False
        username = self.config.username or nick
        host, port = self.servers[self._server_index % len(self.servers)]
        self.log.info("connecting", host=host, port=port, tls=self.config.tls)
        self.connection.connect(
            host,
            port,
            nick,
            username=username,
            ircname=self.config.realname,
            password=self.config.password.value if self.config.password else None,
            connect_factory=self._connector,
            registration_lines=[f"NICK {nick}", f"USER {username} 0 * :{self.config.realname}"],
        )
        self._connected_since = self.clock()
        self.liveness.reset(self.clock())
        self.connects += 1

    def _send_raw(self, line: str) -> None:
        if self.connection.is_connected():
            self.connection.send_raw(safe_line(line))

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self._timers.append((self.clock() + delay, fn))

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the reactor thread after `delay` seconds (call from that thread)."""
        self._schedule(delay, fn)

    def _try_connect(self) -> None:
        self._reconnect_pending = False
        if self._stop.is_set():
            return
        try:
            self.connect()
        except (irc.client.ServerConnectionError, OSError, ssl.SSLError) as exc:
            self.log.warning("connect_failed", error=str(exc))
            self._reconnect_later()

    def _reconnect_later(self) -> None:
        """Schedule the next attempt, on the next server in the list, after a backoff."""
        if self._reconnect_pending or self._stop.is_set():
            return
        self._reconnect_pending = True
        self._server_index += 1
        delay = self.backoff.next_delay(self.clock())
        host, port = self.servers[self._server_index % len(self.servers)]
        self.log.info("reconnect_scheduled", retry_in=round(delay, 1), host=host, port=port)
        self._schedule(delay, self._try_connect)

    def _check_liveness(self, now: float) -> None:
        if not self.connection.is_connected():
            return
        verdict = self.liveness.check(now)
        if verdict == "ping":
            self.connection.send_raw(f"PING :relaybot-{int(now)}")
        elif verdict == "dead":
            state = "ping_timeout" if self.registered else "registration_timeout"
            self.log.warning(state, silent_for=round(now - self.liveness.last_heard, 1))
            self.connection.disconnect(state.replace("_", " "))
        elif self.registered and now >= self._next_nick_try:
            self._regain_nick(now)

    def _regain_nick(self, now: float) -> None:
        self._next_nick_try = now + NICK_REGAIN_INTERVAL
        if self._fold(self.nick) != self._fold(self.config.nick):
            self._send_raw(f"NICK {self.config.nick}")

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Connect and process until `stop()`; then QUIT and disconnect."""
        self._try_connect()
        while not self._stop.is_set():
            self.step(0.05)
        self._shutdown()

    def step(self, timeout: float) -> None:
        """One loop turn. Nothing a connection does may end the loop: every stage is
        guarded, so a fault is a logged error and, at worst, a reconnect."""
        try:
            self._wait_and_read(timeout)
        except Exception:
            self.log.exception("reactor_error")
        while True:
            try:
                fn = self._completions.popleft()
            except IndexError:
                break
            try:
                fn()
            except Exception:
                self.log.exception("completion_handler_failed")
        now = self.clock()
        due = [fn for at, fn in self._timers if at <= now]
        self._timers = [(at, fn) for at, fn in self._timers if at > now]
        for fn in due:
            try:
                fn()
            except Exception:
                self.log.exception("timer_failed")
        for stage in (self._check_liveness, self._flush):
            try:
                stage(now)
            except Exception:
                self.log.exception("reactor_error", stage=stage.__name__)

    def _wait_and_read(self, timeout: float) -> None:
        """The reactor's process_once, also woken by call_soon from other threads."""
        sockets = self.reactor.sockets
        try:
            readable, _, _ = select.select([*sockets, self._wake_read], [], [], timeout)
        except (OSError, ValueError):
            readable = []  # a connection closed between listing and select: next turn
        if self._wake_read in readable:
            with contextlib.suppress(OSError):
                while self._wake_read.recv(4096):
                    pass
        self.reactor.process_data([sock for sock in readable if sock is not self._wake_read])
        self.reactor.process_timeout()

    def _flush(self, now: float) -> None:
        if not (self.registered and self.connection.is_connected()):
            return
        due = self.outbox.due(now)
        for written, item in enumerate(due):
            if not self.connection.send_raw(item.line):
                if self.connection.is_connected():  # refused as malformed: only this line
                    if item is self._ack_item:
                        self._drop_ack()
                    continue
                # Not written, so never recorded as said; the disconnect dropped the rest.
                self.log.warning("unsent_lines_dropped", count=len(due) - written)
                return
            if item is self._ack_item:
                self._ack_item = None
                self.delivery.ack_written()
                continue
            if item.on_sent is not None:
                item.on_sent()
            if item.on_lost is not None:
                self.delivery.written(item.on_lost, self.clock())
        # The real clock: a shutdown flushes with a time far ahead, and must not queue a PING
        # that no later flush would write.
        token = self.delivery.want_ack(self.clock())
        if token is not None:
            # Paced like any line, so that confirming costs flood budget, never a kill.
            self._ack_item = Outgoing(f"PING :{token}")
            if not self.outbox.push(self._ack_item):
                self._drop_ack()
                self.log.warning("delivery_check_dropped", reason="outbox full")

    def _drop_ack(self) -> None:
        self._ack_item = None
        self.delivery.ack_dropped()

    def _confirm_before_quit(self, deadline: float) -> None:
        """At shutdown, before QUIT: PING until the server has confirmed every line written,
        so that lines it has are kept in the saved contexts, not retracted."""
        if self._ack_item is not None:  # queued, never written: ask again directly
            self._drop_ack()
        while len(self.delivery) and self.connection.is_connected() and self.clock() < deadline:
            if not self.delivery.awaiting_pong:
                token = self.delivery.want_ack(self.clock(), at_once=True)
                if token is None or not self.connection.send_raw(f"PING :{token}"):
                    return
                self.delivery.ack_written()
            self.reactor.process_once(0.1)

    def _shutdown(self) -> None:
        if self.connection.is_connected():
            try:
                self._flush(self.clock() + 3600)
                self._confirm_before_quit(self.clock() + 2.0)
                self.connection.quit(self._quit_message)
                # Give the server a moment to read the QUIT before the socket closes.
                deadline = self.clock() + 2.0
                while self.connection.is_connected() and self.clock() < deadline:
                    self.reactor.process_once(0.1)
            finally:
                self.connection.disconnect(self._quit_message)
        self.log.info("stopped")

    # --- wire events ---------------------------------------------------------------------------

    def _dispatch(self, connection: Any, event: Any) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)

    def _origin(self, event: Any) -> Origin:
        source = event.source
        if source is None:
            return Origin("")
        nick = clean_nick(source.nick or "")
        folded = self._fold(nick)
        tags = {tag.get("key"): tag.get("value") for tag in event.tags or []}
        # Without account-tag, fall back to what extended-join, account-notify or WHOX said.
        account = tags.get("account") or self.accounts.get(folded)
        bot = bool(BOT_TAGS.intersection(tags)) or folded in self.bots
        return Origin(nick, source.user or "", source.host or "", account, bot)

    def _track_account(self, nick: str, account: str | None) -> None:
        if len(self.accounts) >= MAX_TRACKED_USERS:
            self.accounts.pop(next(iter(self.accounts)))
        self.accounts[self._fold(nick)] = account if account not in (None, "", "*", "0") else None

    def _on_pong(self, event: Any) -> None:
        self.delivery.confirm(event.arguments[-1] if event.arguments else (event.target or ""))

    def _on_ping(self, event: Any) -> None:
        token = safe_line(event.target or "")[:400] or "relaybot"
        if self.connection.is_connected():
            self.connection.send_raw(f"PONG :{token}")

    def _nick_freed(self, nick: str) -> None:
        wanted = self.config.nick
        if self._fold(nick) == self._fold(wanted) and self._fold(self.nick) != self._fold(wanted):
            self.log.info("nick_regain", nick=wanted)
            self._send_raw(f"NICK {wanted}")

    def _on_featurelist(self, event: Any) -> None:
        if any(str(item).upper() == "WHOX" for item in event.arguments):
            self._whox = True
        # ISUPPORT arrives after 001: this is the first moment we know the bot-mode letter.
        bot_mode = getattr(self.connection.features, "bot", None)
        if (
            self.config.set_bot_mode
            and not self._bot_mode_set
            and isinstance(bot_mode, str)
            and len(bot_mode) == 1
        ):
            self._bot_mode_set = True
            self._send_raw(f"MODE {self.nick} +{bot_mode}")

    def _on_account(self, event: Any) -> None:
        if event.source is not None and event.source.nick:
            self._track_account(event.source.nick, event.target)

    def _on_whospcrpl(self, event: Any) -> None:
        # `WHO #chan %tuhnfa,171` answers: token user host nick flags account
        args = list(event.arguments)
        if len(args) >= 6 and args[0] == WHOX_TOKEN:
            self._who_entry(args[3], args[4], args[5])

    def _on_whoreply(self, event: Any) -> None:
        # 352: channel user host server nick flags :hops realname
        args = list(event.arguments)
        if len(args) >= 6:
            self._who_entry(args[4], args[5], None)

    def _who_entry(self, nick: str, flags: str, account: str | None) -> None:
        bot_flag = getattr(self.connection.features, "bot", None)
        folded = self._fold(nick)
        if isinstance(bot_flag, str) and bot_flag and bot_flag in flags:
            if len(self.bots) >= MAX_TRACKED_USERS:
                self.bots.pop()
            self.bots.add(folded)
        else:
            self.bots.discard(folded)
        if account is not None:
            self._track_account(nick, account)

    def _on_whoisbot(self, event: Any) -> None:
        args = list(event.arguments)
        if args:
            if len(self.bots) >= MAX_TRACKED_USERS:
                self.bots.pop()
            self.bots.add(self._fold(args[0]))

    _on_335 = _on_whoisbot

    def _on_mode(self, event: Any) -> None:
        channel = event.target or ""
        args = list(event.arguments)
        if not args or not is_channel_name(channel):
            return
        for nick, prefix, added in status_changes(args[0], args[1:], self.connection.features):
            self.on_event(StatusChange(channel, nick, prefix, added))

    # registration

    def _on_cap(self, event: Any) -> None:
        args = list(event.arguments)
        if not args:
            return
        sub = args[0].upper()
        if sub == "LS":
            more = len(args) > 2 and args[1] == "*"
            self._offer(args[-1])
            if not more:
                wanted = self._caps_to_request(self._caps_offered)
                if wanted:
                    self._send_raw(f"CAP REQ :{' '.join(wanted)}")
                else:
                    self._end_cap()
        elif sub == "ACK":
            for cap in args[-1].split():
                if cap.startswith("-"):
                    self._caps_enabled.discard(cap[1:])
                else:
                    self._caps_enabled.add(cap)
            self.log.info("caps_enabled", caps=sorted(self._caps_enabled))
            if self._cap_ended:
                return  # a later REQ (after CAP NEW)
            if "sasl" in self._caps_enabled and self.config.sasl is not None:
                self._send_raw(f"AUTHENTICATE {self.config.sasl.mechanism}")
            else:
                self._end_cap()
        elif sub == "NAK":
            self.log.warning("caps_refused", caps=args[-1])
            self._end_cap()
        elif sub == "NEW":
            new = self._offer(args[-1])
            wanted = [cap for cap in self._caps_to_request(new) if cap != "sasl"]
            if wanted:
                self._send_raw(f"CAP REQ :{' '.join(wanted)}")
        elif sub == "DEL":
            gone = args[-1].split()
            for cap in gone:
                self._caps_offered.pop(cap, None)
                self._caps_enabled.discard(cap)
            self.log.info("caps_removed", caps=gone)

    def _offer(self, text: str) -> dict[str, str]:
        offered = {}
        for item in text.split():
            name, _, value = item.partition("=")
            offered[name] = value
        self._caps_offered.update(offered)
        return offered

    def _caps_to_request(self, offered: dict[str, str]) -> list[str]:
        wanted = [cap for cap in WANTED_CAPS if cap in offered and cap != "sasl"]
        sasl = self.config.sasl
        if sasl is not None and not self._cap_ended:
            mechanisms = offered.get("sasl")
            if mechanisms is None:
                if "sasl" not in self._caps_offered:
                    self.log.error(
                        "sasl_unavailable",
                        problem="the server offers no SASL; continuing unauthenticated",
                    )
            elif mechanisms and sasl.mechanism not in mechanisms.upper().split(","):
                self.log.error(
                    "sasl_unavailable",
                    problem=f"the server does not offer {sasl.mechanism}; continuing"
                    " unauthenticated",
                    offered=mechanisms,
                )
            else:
                wanted.insert(0, "sasl")
        return wanted

    def _end_cap(self) -> None:
        if not self._cap_ended:
            self._cap_ended = True
            self._send_raw("CAP END")

    def _on_authenticate(self, event: Any) -> None:
        if event.target != "+" or self.config.sasl is None:
            return
        sasl = self.config.sasl
        if sasl.mechanism == "EXTERNAL":
            # The TLS client certificate is the credential; an empty authzid.
            self.connection.send_raw("AUTHENTICATE +")
            return
        password = sasl.password.value if sasl.password else ""
        for line in sasl_plain_lines(sasl.username, password):
            self.connection.send_raw(line)  # base64: nothing to sanitise, and never logged

    def _on_saslsuccess(self, event: Any) -> None:
        self.log.info("sasl_success")
        self._end_cap()

    def _sasl_failed(self, event: Any) -> None:
        self.log.error("sasl_failed", numeric=event.type, message=" ".join(event.arguments))
        self._end_cap()

    _on_saslfail = _on_sasltoolong = _on_saslaborted = _on_nicklocked = _sasl_failed

    def _on_saslalready(self, event: Any) -> None:
        self.log.info("sasl_already_authenticated")
        self._end_cap()

    def _on_saslmechs(self, event: Any) -> None:
        # 908 comes before 904: the mechanisms this server would have taken.
        mechanisms = event.arguments[0] if event.arguments else ""
        self.log.error("sasl_mechanisms_offered", mechanisms=mechanisms)

    def _on_loggedout(self, event: Any) -> None:
        self.log.warning("logged_out")

    def _on_loggedin(self, event: Any) -> None:
        self.log.info("logged_in", account=event.arguments[1] if len(event.arguments) > 1 else None)

    def _on_nicknameinuse(self, event: Any) -> None:
        if self.registered:
            return
        tried = event.arguments[0] if event.arguments else self.nick
        if self._nick_candidates:
            candidate = self._nick_candidates.pop(0)
        else:
            candidate = fallback_nick(tried, self.config.nick)
        self.log.info("nick_taken", nick=tried, trying=candidate)
        self.connection.real_nickname = candidate
        self._send_raw(f"NICK {candidate}")

    _on_erroneusnickname = _on_unavailresource = _on_nicknameinuse

    def _on_welcome(self, event: Any) -> None:
        self.registered = True
        self._cap_ended = True
        self.backoff.connected(self.clock())
        self._next_nick_try = self.clock() + NICK_REGAIN_INTERVAL
        self.log.info("registered", nick=self.nick)
        for channel in self.channels.values():
            self._send_raw(
                f"JOIN {channel.name} {channel.key}" if channel.key else f"JOIN {channel.name}"
            )
        if self.on_registered is not None:
            self.on_registered()

    def _on_disconnect(self, event: Any) -> None:
        self.registered = False
        dropped = self.outbox.clear()
        if dropped:
            self.log.warning("unsent_lines_dropped", count=len(dropped))
        self._ack_item = None
        retractions = self.delivery.lost()
        if retractions:
            # Written, but the server never confirmed them: no longer counted as said.
            self.log.warning("unconfirmed_lines_retracted", count=len(retractions))
        for retract in retractions:
            try:
                retract()
            except Exception:
                self.log.exception("retract_failed")
        for channel in self.channels.values():
            channel.joined = False
        if self._stop.is_set():
            return
        self.log.warning("disconnected", reason=" ".join(event.arguments))
        self._reconnect_later()

    def _on_error(self, event: Any) -> None:
        # The server answers our own QUIT with ERROR: expected while stopping, not a fault.
        level = self.log.info if self._stop.is_set() else self.log.warning
        level("server_error", message=event.target)

    # channel events

    def _on_pubmsg(self, event: Any) -> None:
        self.on_event(Message(self._origin(event), event.target, event.arguments[0]))

    def _on_privmsg(self, event: Any) -> None:
        self.on_event(Message(self._origin(event), event.target, event.arguments[0]))

    def _on_action(self, event: Any) -> None:
        text = event.arguments[0] if event.arguments else ""
        self.on_event(Action(self._origin(event), event.target, text))

    def _on_join(self, event: Any) -> None:
        origin = self._origin(event)
        channel = event.target
        if len(event.arguments) >= 1:  # extended-join: the account, or * for none
            self._track_account(origin.nick, event.arguments[0])
            account = event.arguments[0] if event.arguments[0] not in ("", "*") else None
            origin = Origin(origin.nick, origin.user, origin.host, account, origin.bot)
        if self._fold(origin.nick) == self._fold(self.nick):
            self._own_user, self._own_host = origin.user or None, origin.host or None
            known = self.channels.setdefault(self._fold(channel), _Channel(channel, None))
            known.joined = True
            self.log.info("joined", channel=channel)
            # Accounts and bot flags of everyone already there.
            self._send_raw(
                f"WHO {channel} %tuhnfa,{WHOX_TOKEN}" if self._whox else f"WHO {channel}"
            )
        self.on_event(Join(origin, channel))
        if self._fold(origin.nick) == self._fold(self.nick) and self.on_joined is not None:
            self.on_joined(channel)

    def _on_part(self, event: Any) -> None:
        origin = self._origin(event)
        reason = event.arguments[0] if event.arguments else ""
        if self._fold(origin.nick) == self._fold(self.nick):
            self.channels.pop(self._fold(event.target), None)
        self.on_event(Part(origin, event.target, reason))

    def _on_quit(self, event: Any) -> None:
        reason = event.arguments[0] if event.arguments else ""
        origin = self._origin(event)
        self.on_event(Quit(origin, reason))
        self._nick_freed(origin.nick)
        self.accounts.pop(self._fold(origin.nick), None)
        self.bots.discard(self._fold(origin.nick))

    def _on_nick(self, event: Any) -> None:
        origin = self._origin(event)
        self.on_event(NickChange(origin, clean_nick(event.target or "")))
        if self._fold(origin.nick) != self._fold(self.nick):
            self._nick_freed(origin.nick)
        old, new = self._fold(origin.nick), self._fold(event.target or "")
        if old in self.accounts:
            self.accounts[new] = self.accounts.pop(old)
        if old in self.bots:
            self.bots.discard(old)
            self.bots.add(new)

    def _on_topic(self, event: Any) -> None:
        text = event.arguments[0] if event.arguments else ""
        self.on_event(Topic(event.target, text, self._origin(event)))

    def _on_currenttopic(self, event: Any) -> None:
        if len(event.arguments) >= 2:
            self.on_event(Topic(event.arguments[0], event.arguments[1], None))

    def _on_namreply(self, event: Any) -> None:
        if len(event.arguments) >= 3:
            nicks = tuple(clean_nick(item.split("!")[0]) for item in event.arguments[2].split())
            self.on_event(Names(event.arguments[1], nicks))

    def _on_kick(self, event: Any) -> None:
        origin = self._origin(event)
        target = clean_nick(event.arguments[0]) if event.arguments else ""
        reason = event.arguments[1] if len(event.arguments) > 1 else ""
        channel = event.target
        self.on_event(Kick(origin, channel, target, reason))
        if self._fold(target) == self._fold(self.nick):
            self.log.warning("kicked", channel=channel, by=origin.nick, reason=reason)
            known = self.channels.get(self._fold(channel))
            if self.config.rejoin_on_kick and known is not None:
                known.joined = False
                self._schedule(self.config.rejoin_delay, lambda: self.join(known.name, known.key))
            else:
                self._forget(channel, "kicked")

    def _channel_refused(self, event: Any) -> None:
        channel = event.arguments[0] if event.arguments else ""
        if channel:
            self._forget(channel, _CHANNEL_GONE.get(event.type, event.type))

    _on_bannedfromchan = _on_inviteonlychan = _on_badchannelkey = _on_channelisfull = (
        _channel_refused
    )

    def _on_invite(self, event: Any) -> None:
        origin = self._origin(event)
        channel = event.arguments[0] if event.arguments else ""
        if self._fold(event.target or "") != self._fold(self.nick) or not channel:
            return  # invite-notify: someone else was invited
        self.on_event(Invite(origin, channel))
        if invite_allowed(origin.hostmask, origin.account, self.config, self._fold):
            self.log.info("invite_accepted", channel=channel, nick=origin.nick)
            self.join(channel)
        else:
            self.log.info(
                "invite_ignored",
                channel=channel,
                nick=origin.nick,
                hostmask=origin.hostmask,
                account=origin.account,
            )


def _single_target(target: str) -> bool:
    """One nick or channel: never a comma list, a $mask broadcast or a status-prefixed name."""
    return bool(target) and "," not in target and target[0] not in "$@%+~:"


def clean_nick(nick: str) -> str:
    """A nick as it may appear in a context: no controls, no spaces (a hostile server's)."""
    return "".join(ch for ch in nick if ch > " " and ch != "\x7f")


def invite_allowed(
    hostmask: str, account: str | None, config: IrcConfig, fold: Callable[[str], str]
) -> bool:
    if account and any(fold(account) == fold(allowed) for allowed in config.invite_accounts):
        return True
    return any(glob_match(glob, hostmask, fold) for glob in config.invite_from)


def status_changes(modes: str, params: list[str], features: Any) -> list[tuple[str, str, bool]]:
    """(nick, prefix, added) for each status mode in a channel MODE line, using ISUPPORT
    PREFIX and CHANMODES to know which modes take a parameter."""
    prefixes: dict[str, str] = {
        mode: prefix for prefix, mode in dict(getattr(features, "prefix", {})).items()
    }
    chanmodes = getattr(features, "chanmodes", None)
    kinds = list(chanmodes) if isinstance(chanmodes, list) else ["beI", "k", "l", ""]
    always = set("".join(kinds[:2])) | set(prefixes)
    when_set = set(kinds[2]) if len(kinds) > 2 else set()
    result = []
    adding = True
    queue = list(params)
    for char in modes:
        if char in "+-":
            adding = char == "+"
            continue
        takes = char in always or (adding and char in when_set)
        param = queue.pop(0) if takes and queue else None
        if char in prefixes and param:
            result.append((param, prefixes[char], adding))
    return result


def fallback_nick(tried: str, base: str) -> str:
    """The next nick to try once the configured alternatives are used up."""
    stem = base[:7]
    return f"{stem}{random.randint(10, 99)}" if tried.startswith(stem) else f"{stem}_"


def sasl_plain_lines(username: str, password: str) -> list[str]:
    """AUTHENTICATE lines for PLAIN: authzid and authcid both the account, 400-byte chunks."""
    payload = base64.b64encode(f"{username}\0{username}\0{password}".encode()).decode()
    chunks = [payload[i : i + SASL_CHUNK] for i in range(0, len(payload), SASL_CHUNK)]
    if not chunks or len(chunks[-1]) == SASL_CHUNK:
        chunks.append("+")  # an exact multiple of 400 needs an empty final chunk
    return [f"AUTHENTICATE {chunk}" for chunk in chunks]
