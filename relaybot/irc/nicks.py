"""The bot's own nick: the next one to try when the server refuses one during registration
(432/433/437), and when to take the configured nick back (it was freed, or a periodic try)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

# How often a registered bot that did not get its nick asks for it again.
NICK_REGAIN_INTERVAL = 60.0


def fallback_nick(tried: str, base: str) -> str:
    """The next nick to try once the configured alternatives are used up."""
    stem = base[:7]
    return f"{stem}{random.randint(10, 99)}" if tried.startswith(stem) else f"{stem}_"


class NickKeeper:
    """Which nick to ask for. `fold` is called each time (the casemapping may change)."""

    def __init__(
        self,
        wanted: str,
        alternatives: Sequence[str],
        fold: Callable[[str], str],
        *,
        interval: float = NICK_REGAIN_INTERVAL,
    ) -> None:
        self.wanted = wanted
        self.alternatives = tuple(alternatives)
        self.fold = fold
        self.interval = interval
        self._candidates: list[str] = []
        self._next_try = 0.0

    def reset(self) -> None:
        """A new connection: the configured alternatives are all untried again."""
        self._candidates = list(self.alternatives)

    def refused(self, tried: str) -> str:
        """The nick to try after the server refused `tried` during registration."""
        if self._candidates:
            return self._candidates.pop(0)
        return fallback_nick(tried, self.wanted)

    def registered(self, now: float) -> None:
        self._next_try = now + self.interval

    def regain_due(self, now: float, current: str) -> bool:
        """True when it is time for the periodic try and we are not `wanted` (call it only
        while registered); each due time counts as a try."""
        if now < self._next_try:
            return False
        self._next_try = now + self.interval
        return not self.is_wanted(current)

    def freed(self, nick: str, current: str) -> bool:
        """True when `nick` (gone by QUIT or NICK) is the one we want and do not have."""
        return self.fold(nick) == self.fold(self.wanted) and not self.is_wanted(current)

    def is_wanted(self, nick: str) -> bool:
        return self.fold(nick) == self.fold(self.wanted)
