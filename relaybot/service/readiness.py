"""What systemd hears about the bot: READY=1 once registered and in every wanted channel (or
after a timeout), a one-line STATUS, and watchdog pings from a reactor timer. All no-ops
outside systemd."""

from __future__ import annotations

from collections.abc import Callable

from relaybot.config.schema import IrcConfig
from relaybot.irc.session import IrcSession
from relaybot.service.systemd import Notifier

# Report READY=1 this long after registering even if a channel never answers our JOIN.
READY_TIMEOUT = 30.0


class Readiness:
    def __init__(
        self,
        session: IrcSession,
        notifier: Notifier,
        irc: IrcConfig,
        degradation: Callable[[], str],
    ) -> None:
        self.session = session
        self.notifier = notifier
        self.irc = irc
        self.degradation = degradation  # why the engine runs slower than it should, or ""
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
        notifier.status(self.status())
        interval = notifier.watchdog_interval
        if interval is not None:
            # From a reactor timer: a hung reactor loop stops the pings and systemd restarts us.
            def ping() -> None:
                notifier.watchdog()
                session.schedule(interval / 3, ping)

            ping()

    def status(self) -> str:
        degraded = self.degradation()
        return (f"WARNING {degraded}; " if degraded else "") + self._connection_status()

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
        """READY=1 once registered and in every wanted channel (or when forced); else STATUS."""
        session = self.session
        every = len(session.joined_channels()) == len(session.wanted_channels())
        if session.registered and (every or force) and not self.notifier.is_ready:
            self.notifier.ready(self.status())
        else:
            self.notifier.status(self.status())

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        self.notifier.ready_again(self.status())

    def stopping(self) -> None:
        self.notifier.stopping()
