"""The IRC session: the Sender the relay talks to, its channels, connecting and reconnecting
(where STS sends each connect), liveness and shutdown. It owns the state and wires the parts
kept in their own modules: the loop turn (loop), the send side (writer), server-line handlers
(inbound) and their events (translate), CAP/SASL, STS policies, who is who, nicks, channels
and the socket (connection).
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import irc.client

from relaybot.config.schema import ChannelConfig, IrcConfig
from relaybot.irc.capabilities import Capabilities
from relaybot.irc.channels import Channel, join_line
from relaybot.irc.connection import BotConnection, make_connect_factory
from relaybot.irc.ctcp import CtcpResponder
from relaybot.irc.events import IrcEvent
from relaybot.irc.inbound import ServerLines
from relaybot.irc.loop import Loop
from relaybot.irc.message import escape_tag_value
from relaybot.irc.multiline import MULTILINE, Part
from relaybot.irc.multiline import fits as multiline_fits
from relaybot.irc.multiline import limits as multiline_limits
from relaybot.irc.nicks import NickKeeper
from relaybot.irc.observer import NoSessionObserver, SessionObserver
from relaybot.irc.outbox import Batch, Outbox
from relaybot.irc.reconnect import Backoff, Liveness
from relaybot.irc.sasl import SaslLogin
from relaybot.irc.sts import StsPolicies
from relaybot.irc.text import casefold, privmsg_payload_budget, safe_line
from relaybot.irc.tls import TlsSetupError
from relaybot.irc.tracking import UserTracker

# Importable from here, where it was defined before the split (tests use it).
from relaybot.irc.writer import Writer
from relaybot.log import get_logger

log = get_logger(component="session")

# Seconds between two "active" typing notices to one target (the IRCv3 typing spec asks for
# at least 3); also how long one may wait in the outbox before it means nothing any more.
TYPING_EVERY = 3.0


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
        sts_file: Path | None = None,
        observer: SessionObserver | None = None,
    ) -> None:
        self.config = config
        # Told when the bot is registered or not, and of each reconnect (metrics).
        self.observer = observer if observer is not None else NoSessionObserver()
        self.on_event = on_event
        self.on_forget = on_forget
        self.clock = clock
        self.log = log.bind(network=config.network)
        self.reactor = irc.client.Reactor()
        self.reactor.connection_class = BotConnection
        self.connection: BotConnection = self.reactor.server()
        # The library makes this event itself when a connection closes, for whatever reason.
        self.reactor.add_global_handler("disconnect", self._on_disconnect, -10)
        # The library's own PONG echoes the token unsanitised (a CR in it is a second line).
        # Server lines no longer become library events, but keep it off all the same.
        self.reactor.remove_global_handler("ping", irc.client._ping_ponger)
        self.writer = Writer(
            self.connection,
            outbox if outbox is not None else _outbox(config),
            ready=lambda: self.registered and self.connection.is_connected(),
            budget=self.payload_budget,
            fold=self._fold,
            clock=clock,
            log=self.log,
            # Asked as each line is written: lines then count as said when echoed back.
            echoing=lambda: "echo-message" in self.caps.enabled,
        )
        self.outbox, self.delivery = self.writer.outbox, self.writer.delivery
        self.observer.outbox_lines(lambda: len(self.outbox))
        # CTCP queries in private: which get a reply, and the rate limits (relaybot.irc.ctcp).
        self.ctcp = CtcpResponder(clock=clock, log=self.log)
        self.channels: dict[str, Channel] = {}
        for channel in config.channels:
            self._want(channel)
        self.registered = False
        self.caps = Capabilities(
            _sasl_login(config),
            log=self.log,
            sasl_required=config.sasl is not None and config.sasl.required,
        )
        self.nicks = NickKeeper(config.nick, config.alt_nicks, self._fold)
        # What the server told us about users: services accounts and bot flags.
        self.users = UserTracker(self._fold)
        self._own_user: str | None = None
        self._own_host: str | None = None
        self._bot_mode_set = False
        self._typing: dict[str, float] = {}  # target -> when an "active" was last queued
        self.loop = Loop(self.reactor, clock, self.log, (self._check_liveness, self._flush))
        self._stop = self.loop.stopping  # set once stop() was asked; tests read it
        self._quit_message = "relaybot shutting down"
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
        # STS (relaybot.irc.sts): TLS to hosts whose policy says so, even where irc.tls is off.
        self.sts = StsPolicies(sts_file, self.log)
        self._sts_refreshed_at = 0.0  # wall clock: when the live TLS link last renewed it
        self._tls_connector: Callable[[tuple[str, int]], socket.socket] | None = None
        self._sts_upgrade: tuple[str, int] | None = None  # host, port: the next connect's
        self.link: tuple[str, int, bool] | None = None  # host, port, TLS of this connection
        self.started_at = time.time()
        # Each server line the connection reads goes to its handler in relaybot.irc.inbound.
        self.inbound = ServerLines(self)
        self.connection.on_message = self.inbound.dispatch

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
        batch: Batch | None = None,
        in_reply_to: str | None = None,
    ) -> None:
        """Queue `text` as PRIVMSG lines: sanitised, and split where it is longer than a line.
        `on_sent` runs once the last of them is written; `on_lost` if the connection then
        dies before the server confirmed them (see relaybot.irc.delivery). `batch`: the
        reply they belong to (its deadline and supersession, relaybot.irc.outbox).
        `in_reply_to`: the msgid they answer, sent as `+draft/reply` where the server takes
        client tags."""
        tags = self._reply_tag(in_reply_to)
        self.writer.queue_text(
            "PRIVMSG", target, text, on_sent, on_lost, action=action, batch=batch, tags=tags
        )

    def send_multiline(
        self,
        target: str,
        parts: Sequence[Part],
        *,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[], object] | None = None,
        batch: Batch | None = None,
        in_reply_to: str | None = None,
    ) -> bool:
        """Queue `parts` as one draft/multiline batch where the server offers it and they are
        within its limits; False (nothing queued) otherwise, for the caller to send them line
        by line. `on_sent`/`on_lost` are for the whole message, which the server delivers at
        the batch's end."""
        caps = self.caps
        if len(parts) < 2 or not {"batch", MULTILINE} <= caps.enabled:
            return False
        allowed = multiline_limits(caps.offered.get(MULTILINE, ""))
        if allowed is None or not multiline_fits(parts, allowed):
            return False
        tags = self._reply_tag(in_reply_to)
        return self.writer.queue_multiline(target, parts, on_sent, on_lost, batch=batch, tags=tags)

    def _reply_tag(self, in_reply_to: str | None) -> str:
        """`+draft/reply=<msgid>`, escaped, where the server relays client tags; else ""."""
        if in_reply_to and self.client_tags():
            return f"+draft/reply={escape_tag_value(in_reply_to)}"
        return ""

    def client_tags(self) -> bool:
        """Whether the server relays client tags (`+typing`, `+draft/reply`)."""
        return "message-tags" in self.caps.enabled

    def typing(self, target: str, *, active: bool) -> None:
        """A `+typing` TAGMSG to `target` where the server relays client tags: "active" at
        most once every TYPING_EVERY s a target, "done" only after an "active". Paced like
        any line, but it only goes while it means something: unsent after TYPING_EVERY s it
        is dropped, and a "done" replaces an unsent "active"."""
        if not self.client_tags() or not self.registered:
            return
        folded, now = self._fold(target), self.clock()
        if active:
            if now - self._typing.get(folded, float("-inf")) < TYPING_EVERY:
                return
            self._typing[folded] = now
        elif self._typing.pop(folded, None) is None:
            return
        state = "active" if active else "done"
        batch = Batch(deadline=now + TYPING_EVERY, key="typing")
        self.writer.queue_tagmsg(target, f"+typing={state}", batch)

    def send_notice(self, target: str, text: str) -> None:
        self.writer.queue_text("NOTICE", target, text, None, None)

    def drop_queued(self, target: str) -> int:
        return len(self.outbox.drop_target(self._fold(target)))

    def send_delay(self, target: str) -> float:
        """Seconds a line queued now for `target` would wait for its turn to go out."""
        return self.outbox.wait(self._fold(target), self.clock())

    # --- cross-thread hand-over --------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Thread-safe and signal-safe: run `fn` on the reactor thread at the next loop turn."""
        self.loop.call_soon(fn)

    def stop(self, message: str = "relaybot shutting down") -> None:
        """Thread-safe and signal-safe: ask the loop to QUIT and return."""
        self._quit_message = message  # before the stop is seen by the loop
        self.loop.stop()

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
        self.users.clear()
        self._bot_mode_set = False
        for channel in self.channels.values():
            channel.joined = False
        username = self.config.username or nick
        host, port, tls = self._route(*self.servers[self._server_index % len(self.servers)])
        self.caps.reset(secure=tls)
        self.link = (host, port, tls)
        self.log.info("connecting", host=host, port=port, tls=tls)
        self.connection.connect(
            host,
            port,
            nick,
            username=username,
            ircname=self.config.realname,
            password=self.config.password.value if self.config.password else None,
            connect_factory=self._connector if tls == self.config.tls else self._sts_connector(),
            registration_lines=[f"NICK {nick}", f"USER {username} 0 * :{self.config.realname}"],
        )
        self._connected_since = self.clock()
        self.liveness.reset(self.clock())
        self.connects += 1

    # --- STS ------------------------------------------------------------------------------------

    def _route(self, host: str, port: int) -> tuple[str, int, bool]:
        """Where the next connect goes: as configured, unless STS moves a plaintext one to
        TLS (an upgrade the server just asked for, or a stored policy for this host)."""
        if self.config.tls:
            return host, port, True
        upgrade, self._sts_upgrade = self._sts_upgrade, None
        if upgrade is not None and upgrade[0] == host:
            return host, upgrade[1], True
        policy = self.sts.get(host, time.time())
        if policy is not None:
            self.log.info("sts_policy_applied", host=host, port=policy.port, instead_of=port)
            return host, policy.port, True
        return host, port, False

    def _sts_connector(self) -> Callable[[tuple[str, int]], socket.socket]:
        # Built when first needed: a bot that never meets STS never sets TLS up.
        if self._tls_connector is None:
            self._tls_connector = make_connect_factory(dataclasses.replace(self.config, tls=True))
        return self._tls_connector

    def sts_negotiated(self) -> None:
        """After each CAP line: act on what the server's `sts` value asked for."""
        caps, link = self.caps, self.link
        if link is None:
            return
        host, port, tls = link
        if caps.sts_upgrade is not None and not tls:
            # Leave at once, before any registration, and come back over TLS: no backoff.
            self._sts_upgrade = (host, caps.sts_upgrade)
            self.log.info("sts_upgrading", host=host, port=caps.sts_upgrade)
            self.connection.disconnect("Upgrading to TLS (STS)")
        elif caps.sts_policy is not None and tls:
            duration = caps.sts_policy.duration
            caps.sts_policy = None
            if duration is None:
                return
            if not (self.config.tls_verify or self.config.tls_fingerprints):
                # The spec: only a verified connection may set a policy.
                self.log.warning("sts_policy_ignored", host=host, reason="irc.tls_verify is off")
                return
            self.sts.learn(host, port, duration, time.time())

    def give_up_connection(self, reason: str) -> None:
        """Leave this connection before registering (QUIT, then close): the disconnect that
        follows takes the usual way, a reconnect after the backoff. For a connection the bot
        must not stay on, such as one that SASL, required, did not log in."""
        if self.connection.is_connected():
            self.log.warning("connection_given_up", reason=reason)
            self.connection.disconnect(reason)

    def _send_raw(self, line: str) -> None:
        if self.connection.is_connected():
            self.connection.send_raw(safe_line(line))

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the reactor thread after `delay` seconds (call from that thread)."""
        self.loop.schedule(delay, fn)

    def _try_connect(self) -> None:
        self._reconnect_pending = False
        if self._stop.is_set():
            return
        try:
            self.connect()
        except (irc.client.ServerConnectionError, OSError, ssl.SSLError, TlsSetupError) as exc:
            # TlsSetupError: the TLS an STS policy asked for, set up only then, and refused.
            self.log.warning("connect_failed", error=str(exc))
            self._reconnect_later()

    def _reconnect_later(self) -> None:
        """Schedule the next attempt, on the next server in the list, after a backoff."""
        if self._reconnect_pending or self._stop.is_set():
            return
        self._reconnect_pending = True
        self.observer.reconnecting()
        self._server_index += 1
        delay = self.backoff.next_delay(self.clock())
        host, port = self.servers[self._server_index % len(self.servers)]
        self.log.info("reconnect_scheduled", retry_in=round(delay, 1), host=host, port=port)
        self.loop.schedule(delay, self._try_connect)

    def _check_liveness(self, now: float) -> None:
        if not self.connection.is_connected():
            return
        self._refresh_sts()
        verdict = self.liveness.check(now)
        if verdict == "ping":
            self.connection.send_raw(f"PING :relaybot-{int(now)}")
        elif verdict == "dead":
            state = "ping_timeout" if self.registered else "registration_timeout"
            self.log.warning(state, silent_for=round(now - self.liveness.last_heard, 1))
            self.connection.disconnect(state.replace("_", " "))
        elif self.registered and self.nicks.regain_due(now, self.nick):
            self._send_raw(f"NICK {self.nicks.wanted}")

    def _refresh_sts(self) -> None:
        """While a TLS link lasts, keep its host's policy counted from now (hourly): a crash
        after a connection longer than the policy's duration leaves no disconnect to do it."""
        wall = time.time()
        if self.link is None or not self.link[2] or wall - self._sts_refreshed_at < 3600:
            return
        self._sts_refreshed_at = wall
        self.sts.reschedule(self.link[0], wall)

    def _on_disconnect(self, connection: Any, event: Any) -> None:
        """The irc library's own event for a closed connection, whatever closed it."""
        self.registered = False
        self.observer.registered(False)
        self._typing.clear()
        self.writer.disconnected()
        for channel in self.channels.values():
            channel.joined = False
        if self.link is not None and self.link[2]:
            self.sts.reschedule(self.link[0], time.time())
        if self._stop.is_set():
            return
        if self._sts_upgrade is not None and not self._reconnect_pending:
            self._reconnect_pending = True
            self.loop.schedule(0.0, self._try_connect)  # the same server, over TLS, at once
            return
        self.log.warning("disconnected", reason=" ".join(event.arguments))
        self._reconnect_later()

    # --- the loop (relaybot.irc.loop runs each turn) ----------------------------------------

    def run(self) -> None:
        """Connect and process until `stop()`; then QUIT and disconnect."""
        self._try_connect()
        while not self._stop.is_set():
            self.step(0.05)
        self._shutdown()

    def step(self, timeout: float) -> None:
        """One loop turn: read, handed-over work, timers, liveness and the outbox flush."""
        self.loop.step(timeout)

    def _flush(self, now: float) -> None:
        # A loop stage by this name, as before the split (reactor_error logs name the stage).
        self.writer.flush(now)

    def _shutdown(self) -> None:
        if self.connection.is_connected():
            try:
                self._flush(self.clock() + 3600)
                self.writer.confirm_before_quit(self.clock() + 2.0, self.reactor.process_once)
                self.connection.quit(self._quit_message)
                # Give the server a moment to read the QUIT before the socket closes.
                deadline = self.clock() + 2.0
                while self.connection.is_connected() and self.clock() < deadline:
                    self.reactor.process_once(0.1)
            finally:
                self.connection.disconnect(self._quit_message)
        self.log.info("stopped")


def _outbox(config: IrcConfig) -> Outbox:
    flood = config.flood
    return Outbox(
        burst=flood.burst,
        interval=flood.interval,
        bytes_per_second=flood.bytes_per_second,
        max_queued=flood.max_queued,
    )


def _sasl_login(config: IrcConfig) -> SaslLogin | None:
    sasl = config.sasl
    if sasl is None:
        return None
    password = sasl.password.value if sasl.password else ""
    key_pem = sasl.key.value if sasl.key else ""
    return SaslLogin(sasl.mechanism, sasl.username, password, key_pem)
