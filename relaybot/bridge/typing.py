"""Typing notices while a reply is generated (the IRCv3 `+typing` client tag): "active" when a
generation starts and again every few seconds while it runs, since a client forgets one after
six; "done" when it ends without a reply. A reply that is sent ends it by itself: clients take
a message from someone as the end of their typing.

Reactor thread only. The session decides whether the server takes client tags at all, and
paces and rate-limits what goes out (relaybot.irc.session `typing`).
"""

from __future__ import annotations

import itertools
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
        self._current: dict[ContextKey, int] = {}  # the live refresh of each conversation
        self._tokens = itertools.count(1)

    def started(self, key: ContextKey, target: str) -> None:
        """A reply for `target` started generating."""
        token = self._current[key] = next(self._tokens)
        self.sender.typing(target, active=True)
        self._schedule(key, target, token)

    def finished(self, key: ContextKey, target: str, *, replied: bool) -> None:
        """Its generation ended; `replied`: lines are on their way (they end the notice)."""
        if self._current.pop(key, None) is not None and not replied:
            self.sender.typing(target, active=False)

    def _schedule(self, key: ContextKey, target: str, token: int) -> None:
        if self.timers is not None:
            self.timers.schedule(REFRESH, lambda: self._refresh(key, target, token))

    def _refresh(self, key: ContextKey, target: str, token: int) -> None:
        if self._current.get(key) != token:
            return  # finished, or a newer generation has its own refresh
        if not self.generating(key):
            del self._current[key]  # cancelled (part, mute, reset): it expires by itself
            return
        self.sender.typing(target, active=True)
        self._schedule(key, target, token)
