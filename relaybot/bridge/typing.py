"""Typing notices while a reply is generated (the IRCv3 `+typing` client tag): "active" when a
generation starts and again every few seconds while it runs, since a client forgets one after
six; "done" when it ends without a reply. A reply that is sent ends it by itself: clients take
a message from someone as the end of their typing.

Reactor thread only. The session decides whether the server takes client tags at all, and
paces and rate-limits what goes out (relaybot.irc.session `typing`). One timer renews every
generation in progress, so that many short generations never leave a timer each behind.
"""

from __future__ import annotations

from collections.abc import Callable

from relaybot.bridge.ports import Sender, Timers
from relaybot.conversation.identity import ContextKey

# Seconds between two "active" notices for one generation: the spec's "no more often than
# every 3 s", and well inside the 6 s after which a client drops the indicator.
REFRESH = 3.0


class Typing:
    def __init__(
        self, sender: Sender, timers: Timers | None, generating: Callable[[ContextKey], bool]
    ) -> None:
        self.sender = sender
        self.timers = timers
        self.generating = generating  # whether a reply is still being generated there
        self._current: dict[ContextKey, str] = {}  # generations in progress: their target
        self._ticking = False  # the one refresh timer is pending

    def started(self, key: ContextKey, target: str) -> None:
        """A reply for `target` started generating."""
        self._current[key] = target
        self.sender.typing(target, active=True)
        self._tick_later()

    def finished(self, key: ContextKey, target: str, *, replied: bool) -> None:
        """Its generation ended; `replied`: lines are on their way (they end the notice)."""
        if self._current.pop(key, None) is not None and not replied:
            self.sender.typing(target, active=False)

    def _tick_later(self) -> None:
        if self.timers is not None and not self._ticking:
            self._ticking = True
            self.timers.schedule(REFRESH, self._tick)

    def _tick(self) -> None:
        """Renew "active" for every generation still running (the session drops a renewal
        that comes sooner than the spec allows for its target)."""
        self._ticking = False
        for key, target in list(self._current.items()):
            if not self.generating(key):
                del self._current[key]  # cancelled (part, mute, reset): it expires by itself
                continue
            self.sender.typing(target, active=True)
        if self._current:
            self._tick_later()
