"""What the IRC session reports about its link, for metrics: the `SessionObserver` seam it
takes (one session, one network), and the no-op default. Calls come on the reactor thread,
except `outbox_lines`' reader, which the observer may call from any thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class SessionObserver(Protocol):
    def registered(self, up: bool) -> None:
        """The server accepted the bot (001), or the connection is gone (`up` False)."""
        ...

    def reconnecting(self) -> None:
        """Another connection attempt was scheduled: the link was lost or an attempt failed."""
        ...

    def outbox_lines(self, lines: Callable[[], int]) -> None:
        """Given once: how many lines wait in the outbox now. It reads one integer, so any
        thread may call it."""
        ...


class NoSessionObserver:
    """The default: nothing is observed."""

    def registered(self, up: bool) -> None:
        pass

    def reconnecting(self) -> None:
        pass

    def outbox_lines(self, lines: Callable[[], int]) -> None:
        pass
