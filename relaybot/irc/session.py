"""The IRC session: the connection and the reactor loop (with the one door for other threads),
the outbox flush, reconnects, and the translation of server lines into relaybot.irc.events.
CAP/SASL, who is who, the nick and the channel list live in their own modules; this wires them.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import irc.client
import irc.ctcp

from relaybot.config.schema import ChannelConfig, IrcConfig
from relaybot.irc import numerics as num
from relaybot.irc.capabilities import Capabilities, SaslLogin
from relaybot.irc.channels import JOIN_REFUSED, Channel, invite_allowed, join_line
from relaybot.irc.connection import BotConnection, make_connect_factory
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
from relaybot.irc.message import IrcMessage
from relaybot.irc.nicks import NickKeeper
from relaybot.irc.outbox import Outbox, Outgoing
from relaybot.irc.reconnect import Backoff, Liveness
from relaybot.irc.text import (
    casefold,
    clean_nick,
    is_channel_name,
    privmsg_payload_budget,
    reply_lines,
    safe_line,
)
from relaybot.irc.tracking import UserTracker, whox_fields
from relaybot.log import get_logger

log = get_logger(component="session")

# Lines one send_message/send_notice may become when its text is longer than a line.
MAX_LINES_PER_TEXT = 8

Handler = Callable[[IrcMessage], None]


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
        self.log = log.bind(network=config.network)
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
        self.connection.on_message = self._dispatch
        # The library makes this event itself when a connection closes, for whatever reason.
        self.reactor.add_global_handler("disconnect", self._on_disconnect, -10)
        # The library's own PONG echoes the token unsanitised (a CR in it is a second line).
        # Server lines no longer become library events, but keep it off all the same.
        self.reactor.remove_global_handler("ping", irc.client._ping_ponger)
        self.channels: dict[str, Channel] = {}
        for channel in config.channels:
            self._want(channel)
        self.registered = False
        self.caps = Capabilities(_sasl_login(config), log=self.log)
        self.nicks = NickKeeper(config.nick, config.alt_nicks, self._fold)
        # What the server told us about users: services accounts and bot flags.
        self.users = UserTracker(self._fold)
        self._own_user: str | None = None
        self._own_host: str | None = None
        self._bot_mode_set = False
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
        self.on_registered: Callable[[], None] | None = None
        self.on_joined: Callable[[str], None] | None = None
        self.connects = 0  # successful TCP/TLS connects, for status and tests
        self.connection.on_data = lambda: self.liveness.heard(self.clock())
        self._connector = make_connect_factory(config)  # bad TLS files fail here, at start
        self.started_at = time.time()
        # Every server line the bot acts on, by its command or numeric (relaybot.irc.numerics).
        self._handlers: dict[str, Handler] = {
            "PING": self._on_ping,
            "PONG": self._on_pong,
            "ERROR": self._on_error,
            num.RPL_WELCOME: self._on_welcome,
            num.RPL_ISUPPORT: self._on_isupport,
            num.ERR_ERRONEUSNICKNAME: self._on_nick_refused,
            num.ERR_NICKNAMEINUSE: self._on_nick_refused,
            num.ERR_UNAVAILRESOURCE: self._on_nick_refused,
            # CAP and SASL: relaybot.irc.capabilities answers them
            "CAP": self._negotiate,
            "AUTHENTICATE": self._negotiate,
            num.RPL_LOGGEDIN: self._negotiate,
            num.RPL_LOGGEDOUT: self._negotiate,
            num.ERR_NICKLOCKED: self._negotiate,
            num.RPL_SASLSUCCESS: self._negotiate,
            num.ERR_SASLFAIL: self._negotiate,
            num.ERR_SASLTOOLONG: self._negotiate,
            num.ERR_SASLABORTED: self._negotiate,
            num.ERR_SASLALREADY: self._negotiate,
            num.RPL_SASLMECHS: self._negotiate,
            # who is who: relaybot.irc.tracking keeps it
            "ACCOUNT": self._on_account,
            num.RPL_WHOREPLY: self._on_who_reply,
            num.RPL_WHOSPCRPL: self._on_whox_reply,
            num.RPL_WHOISBOT: self._on_whois_bot,
            # channel events
            "PRIVMSG": self._on_privmsg,
            "JOIN": self._on_join,
            "PART": self._on_part,
            "QUIT": self._on_quit,
            "NICK": self._on_nick,
            "TOPIC": self._on_topic,
            num.RPL_TOPIC: self._on_current_topic,
            num.RPL_NAMREPLY: self._on_names,
            "KICK": self._on_kick,
            "MODE": self._on_mode,
            "INVITE": self._on_invite,
            num.ERR_CHANNELISFULL: self._on_join_refused,
            num.ERR_INVITEONLYCHAN: self._on_join_refused,
            num.ERR_BANNEDFROMCHAN: self._on_join_refused,
            num.ERR_BADCHANNELKEY: self._on_join_refused,
        }

    # What other code and tests read by the names these had before the split.

    @property
    def accounts(self) -> dict[str, str | None]:
        return self.users.accounts

    @property
    def bots(self) -> set[str]:
        return self.users.bots

    @property
    def _caps_enabled(self) -> set[str]:
        return self.caps.enabled

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
        self.channels[self._fold(channel.name)] = Channel(channel.name, key)

    def join(self, name: str, key: str | None = None) -> None:
        self.channels.setdefault(self._fold(name), Channel(name, key))
        if self.registered:
            self._send_raw(join_line(name, key))

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
        self.nicks.reset()
        self.registered = False
        self.caps.reset()
        self.users.clear()
        self._bot_mode_set = False
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
        elif self.registered and self.nicks.regain_due(now, self.nick):
            self._send_raw(f"NICK {self.nicks.wanted}")

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

    def _dispatch(self, message: IrcMessage) -> None:
        handler = self._handlers.get(message.command)
        if handler is not None:
            handler(message)

    def _origin(self, message: IrcMessage) -> Origin:
        if not message.source:
            return Origin("")
        source = irc.client.NickMask(message.source)
        nick = clean_nick(source.nick or "")
        # Without account-tag, fall back to what extended-join, account-notify or WHOX said.
        account = self.users.account_of(nick, message.tags)
        bot = self.users.is_bot(nick, message.tags)
        return Origin(nick, source.user or "", source.host or "", account, bot)

    # connection

    def _on_ping(self, message: IrcMessage) -> None:
        if not message.params:
            return  # nothing to echo: no PONG, as before the split
        token = safe_line(message.params[0])[:400] or "relaybot"
        if self.connection.is_connected():
            self.connection.send_raw(f"PONG :{token}")

    def _on_pong(self, message: IrcMessage) -> None:
        # `:srv PONG srv :token` or `PONG :token`: the token is the last parameter.
        self.delivery.confirm(message.params[-1] if message.params else "")

    def _on_error(self, message: IrcMessage) -> None:
        # The server answers our own QUIT with ERROR: expected while stopping, not a fault.
        level = self.log.info if self._stop.is_set() else self.log.warning
        level("server_error", message=message.params[0] if message.params else None)

    def _on_disconnect(self, connection: Any, event: Any) -> None:
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

    # registration

    def _negotiate(self, message: IrcMessage) -> None:
        for line in self.caps.feed(message.command, message.params):
            self._send_raw(line)  # AUTHENTICATE payloads are base64: never logged

    def _on_nick_refused(self, message: IrcMessage) -> None:
        if self.registered:
            return
        tried = message.params[1] if len(message.params) > 1 else self.nick
        candidate = self.nicks.refused(tried)
        self.log.info("nick_taken", nick=tried, trying=candidate)
        self.connection.real_nickname = candidate
        self._send_raw(f"NICK {candidate}")

    def _on_welcome(self, message: IrcMessage) -> None:
        self.registered = True
        self.caps.registered()
        self.backoff.connected(self.clock())
        self.nicks.registered(self.clock())
        self.log.info("registered", nick=self.nick)
        for channel in self.channels.values():
            self._send_raw(join_line(channel.name, channel.key))
        if self.on_registered is not None:
            self.on_registered()

    def _on_isupport(self, message: IrcMessage) -> None:
        self.users.isupport(message.params[1:])
        # ISUPPORT arrives after 001: this is the first moment we know the bot-mode letter.
        bot_mode = self._bot_flag()
        if (
            self.config.set_bot_mode
            and not self._bot_mode_set
            and bot_mode is not None
            and len(bot_mode) == 1
        ):
            self._bot_mode_set = True
            self._send_raw(f"MODE {self.nick} +{bot_mode}")

    def _bot_flag(self) -> str | None:
        """ISUPPORT BOT: the mode that marks bots, once the server has said it."""
        bot_flag = getattr(self.connection.features, "bot", None)
        return bot_flag if isinstance(bot_flag, str) and bot_flag else None

    # who is who

    def _on_account(self, message: IrcMessage) -> None:
        origin = irc.client.NickMask(message.source or "")
        if origin.nick:
            self.users.account(origin.nick, message.params[0] if message.params else None)

    def _on_who_reply(self, message: IrcMessage) -> None:
        # 352: me channel user host server nick flags :hops realname
        args = message.params[1:]
        if len(args) >= 6:
            self.users.who_reply(args[4], args[5], None, self._bot_flag())

    def _on_whox_reply(self, message: IrcMessage) -> None:
        fields = whox_fields(message.params[1:])
        if fields is not None:
            nick, flags, account = fields
            self.users.who_reply(nick, flags, account, self._bot_flag())

    def _on_whois_bot(self, message: IrcMessage) -> None:
        if len(message.params) > 1:
            self.users.whois_bot(message.params[1])

    # channel events

    def _on_privmsg(self, message: IrcMessage) -> None:
        target, text = message.params[:2]
        origin = self._origin(message)
        ctcp = False
        for part in irc.ctcp.dequote(text):
            if isinstance(part, tuple):
                # Text after a CTCP part is no message either: the irc library's reading.
                ctcp = True
                if part[0] == "ACTION":
                    self.on_event(Action(origin, target, part[1] if len(part) > 1 else ""))
            elif not ctcp:
                self.on_event(Message(origin, target, part))

    def _on_join(self, message: IrcMessage) -> None:
        if not message.params:
            return
        origin = self._origin(message)
        channel, args = message.params[0], message.params[1:]
        if args:  # extended-join: the account, or * for none
            self.users.account(origin.nick, args[0])
            account = args[0] if args[0] not in ("", "*") else None
            origin = Origin(origin.nick, origin.user, origin.host, account, origin.bot)
        me = self._fold(origin.nick) == self._fold(self.nick)
        if me:
            self._own_user, self._own_host = origin.user or None, origin.host or None
            known = self.channels.setdefault(self._fold(channel), Channel(channel, None))
            known.joined = True
            self.log.info("joined", channel=channel)
            self._send_raw(self.users.who_query(channel))  # everyone's account and bot flag
        self.on_event(Join(origin, channel))
        if me and self.on_joined is not None:
            self.on_joined(channel)

    def _on_part(self, message: IrcMessage) -> None:
        if not message.params:
            return
        origin = self._origin(message)
        channel = message.params[0]
        reason = message.params[1] if len(message.params) > 1 else ""
        if self._fold(origin.nick) == self._fold(self.nick):
            self.channels.pop(self._fold(channel), None)
        self.on_event(Part(origin, channel, reason))

    def _on_quit(self, message: IrcMessage) -> None:
        reason = message.params[0] if message.params else ""
        origin = self._origin(message)
        self.on_event(Quit(origin, reason))
        self._nick_freed(origin.nick)
        self.users.quit(origin.nick)

    def _on_nick(self, message: IrcMessage) -> None:
        origin = self._origin(message)
        new = message.params[0] if message.params else ""
        self.on_event(NickChange(origin, clean_nick(new)))
        if self._fold(origin.nick) != self._fold(self.nick):
            self._nick_freed(origin.nick)
        self.users.renamed(origin.nick, new)

    def _nick_freed(self, nick: str) -> None:
        if self.nicks.freed(nick, self.nick):
            self.log.info("nick_regain", nick=self.nicks.wanted)
            self._send_raw(f"NICK {self.nicks.wanted}")

    def _on_topic(self, message: IrcMessage) -> None:
        if not message.params:
            return
        text = message.params[1] if len(message.params) > 1 else ""
        self.on_event(Topic(message.params[0], text, self._origin(message)))

    def _on_current_topic(self, message: IrcMessage) -> None:
        # 332: me channel :topic
        if len(message.params) >= 3:
            self.on_event(Topic(message.params[1], message.params[2], None))

    def _on_names(self, message: IrcMessage) -> None:
        # 353: me symbol channel :names (with userhost-in-names, nick!user@host)
        if len(message.params) >= 4:
            names = message.params[3].split()
            nicks = tuple(clean_nick(item.split("!")[0]) for item in names)
            self.on_event(Names(message.params[2], nicks))

    def _on_kick(self, message: IrcMessage) -> None:
        if not message.params:
            return
        origin = self._origin(message)
        channel = message.params[0]
        target = clean_nick(message.params[1]) if len(message.params) > 1 else ""
        reason = message.params[2] if len(message.params) > 2 else ""
        self.on_event(Kick(origin, channel, target, reason))
        if self._fold(target) == self._fold(self.nick):
            self.log.warning("kicked", channel=channel, by=origin.nick, reason=reason)
            known = self.channels.get(self._fold(channel))
            if self.config.rejoin_on_kick and known is not None:
                known.joined = False
                self._schedule(self.config.rejoin_delay, lambda: self.join(known.name, known.key))
            else:
                self._forget(channel, "kicked")

    def _on_mode(self, message: IrcMessage) -> None:
        if not message.params:
            return
        channel, args = message.params[0], message.params[1:]
        if not args or not is_channel_name(channel):
            return  # user modes, or a channel MODE without changes
        for nick, prefix, added in status_changes(args[0], args[1:], self.connection.features):
            self.on_event(StatusChange(channel, nick, prefix, added))

    def _on_join_refused(self, message: IrcMessage) -> None:
        # 471/473/474/475: me channel :reason
        if len(message.params) > 1 and message.params[1]:
            self._forget(message.params[1], JOIN_REFUSED[message.command])

    def _on_invite(self, message: IrcMessage) -> None:
        origin = self._origin(message)
        invited = message.params[0] if message.params else ""
        channel = message.params[1] if len(message.params) > 1 else ""
        if self._fold(invited) != self._fold(self.nick) or not channel:
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


def _sasl_login(config: IrcConfig) -> SaslLogin | None:
    sasl = config.sasl
    if sasl is None:
        return None
    password = sasl.password.value if sasl.password else ""
    return SaslLogin(sasl.mechanism, sasl.username, password)


def _single_target(target: str) -> bool:
    """One nick or channel: never a comma list, a $mask broadcast or a status-prefixed name."""
    return bool(target) and "," not in target and target[0] not in "$@%+~:"


def status_changes(modes: str, params: Sequence[str], features: Any) -> list[tuple[str, str, bool]]:
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
