"""What systemd hears about the bot: READY=1 once every network is registered and in every
wanted channel (or after a timeout), a STATUS line with each network's state, and watchdog
pings only while every network's loop is turning. All no-ops outside systemd.

Each network keeps its own `NetworkReadiness` on its loop thread; the process's main thread
alone talks to systemd (`ServiceStatus`), reading what the networks last wrote down."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from relaybot.config.schema import IrcConfig
from relaybot.irc.session import IrcSession
from relaybot.service.systemd import Notifier

# Report READY=1 this long after registering even if a channel never answers our JOIN.
READY_TIMEOUT = 30.0
# How often a network's loop writes down its state and that it is still turning.
HEARTBEAT_EVERY = 1.0
# With several networks, READY=1 once one is ready and this long has passed since the start:
# a network whose server is down must not hold the others' service start (and its restarts).
READY_GRACE = 60.0


class NetworkReadiness:
    """One network's state for systemd, kept on its loop thread. `status` and `ready` are
    plain values, written whole, that the main thread may read at any time; `on_change` is
    called (thread-safe) when they changed."""

    def __init__(
        self,
        session: IrcSession,
        irc: IrcConfig,
        on_change: Callable[[], None],
        *,
        heartbeat: float = HEARTBEAT_EVERY,
    ) -> None:
        self.session = session
        self.irc = irc
        self.on_change = on_change
        self.ready = False  # registered and in every wanted channel, or the timeout passed
        self.alive_at = time.monotonic()  # the loop's last heartbeat
        self.status = self._connection_status()
        chained_registered, chained_joined = session.on_registered, session.on_joined

        def registered() -> None:
            if chained_registered is not None:
                chained_registered()
            self.progress()
            # A channel that never answers our JOIN must not hold up start-up forever.
            session.schedule(READY_TIMEOUT, lambda: self.progress(force=True))

        def joined(channel: str) -> None:
            if chained_joined is not None:
                chained_joined(channel)
            self.progress()

        session.on_registered, session.on_joined = registered, joined

        def beat() -> None:
            self.alive_at = time.monotonic()
            self.progress()
            session.schedule(heartbeat, beat)

        session.schedule(heartbeat, beat)

    def _connection_status(self) -> str:
        session = self.session
        host = getattr(session.connection, "server", None) or self.irc.host
        port = getattr(session.connection, "port", None) or self.irc.port
        if not session.registered:
            return f"connecting to {host}:{port}"
        joined = session.joined_channels()
        waiting = [name for name in session.wanted_channels() if name not in joined]
        text = f"connected to {host}:{port} as {session.nick}"
        text += f"; in {', '.join(joined)}" if joined else "; in no channels"
        return text + (f"; joining {', '.join(waiting)}" if waiting else "")

    def progress(self, *, force: bool = False) -> None:
        """Write down the state now; ready once registered and in every wanted channel (or
        when forced). Once ready, a network stays so for READY=1's sake (sent only once)."""
        session = self.session
        every = len(session.joined_channels()) == len(session.wanted_channels())
        ready = self.ready or (session.registered and (every or force))
        status = self._connection_status()
        if (ready, status) != (self.ready, self.status):
            self.ready, self.status = ready, status
            self.on_change()


class ServiceStatus:
    """The process's voice to systemd, on the main thread: READY=1 when every network is
    ready, one STATUS line for them all, and watchdog pings while every loop turns."""

    def __init__(
        self,
        notifier: Notifier,
        networks: Sequence[tuple[str, NetworkReadiness]],
        degradation: Callable[[], str],
    ) -> None:
        self.notifier = notifier
        self.networks = tuple(networks)
        self.degradation = degradation  # why the engine runs slower than it should, or ""
        self._last_status: str | None = None
        self._last_ping = 0.0
        self._started = time.monotonic()

    @property
    def watchdog_interval(self) -> float | None:
        return self.notifier.watchdog_interval

    def status(self) -> str:
        degraded = self.degradation()
        if len(self.networks) == 1:
            text = self.networks[0][1].status
        else:
            text = " | ".join(f"{name}: {readiness.status}" for name, readiness in self.networks)
        return (f"WARNING {degraded}; " if degraded else "") + text

    def update(self, now: float | None = None) -> None:
        """Tell systemd what changed since the last call, and ping the watchdog when due."""
        now = time.monotonic() if now is None else now
        status = self.status()
        if not self.notifier.is_ready and self._ready(now):
            self.notifier.ready(status)
            self._last_status = status
        elif status != self._last_status:
            self.notifier.status(status)
            self._last_status = status
        interval = self.notifier.watchdog_interval
        # A network whose loop hangs stops its heartbeat: no more pings, and systemd
        # restarts the process.
        if interval is None or now - self._last_ping < interval / 3:
            return
        if all(now - readiness.alive_at < interval for _, readiness in self.networks):
            self.notifier.watchdog()
            self._last_ping = now

    def _ready(self, now: float) -> bool:
        ready = [readiness.ready for _, readiness in self.networks]
        if all(ready):
            return True
        return len(ready) > 1 and any(ready) and now - self._started >= READY_GRACE

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        status = self.status()  # once: a network may change it meanwhile
        self.notifier.ready_again(status)
        self._last_status = status

    def stopping(self) -> None:
        self.notifier.stopping()
