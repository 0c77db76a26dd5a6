"""Which written lines the server has confirmed. A server reads a connection's lines in order,
so when it answers a PING, every line written before that PING has reached it. A line enters
the context when it is written (so the context keeps the channel's order); if the connection
dies before a PING written after it is answered, the line is retracted, since a link that dies
silently keeps what was written into it.

Pure bookkeeping: the session writes the PINGs and feeds in the PONGs. Not thread-safe: the
reactor thread only.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

# How long a written line waits for the PING that confirms it. One PING per this many seconds
# while the bot is talking costs a small share of the flood budget (a line costs 1.1 s).
ACK_DELAY = 5.0
TOKEN_PREFIX = "relaybot-ack-"


class Delivery:
    def __init__(self, delay: float = ACK_DELAY) -> None:
        self.delay = delay
        self._unconfirmed: deque[tuple[float, Callable[[], object]]] = deque()
        self._token: str | None = None  # the confirming PING, queued or written
        self._covers = -1  # lines written before that PING; -1 while it is only queued
        self._numbers = itertools.count(1)

    def __len__(self) -> int:
        """Lines written and not yet confirmed."""
        return len(self._unconfirmed)

    def written(self, on_lost: Callable[[], object], now: float) -> None:
        """A line was written; `on_lost` retracts it if it is never confirmed."""
        self._unconfirmed.append((now, on_lost))

    def want_ack(self, now: float, *, at_once: bool = False) -> str | None:
        """The token of a PING to send now, or None: one is due when no PING is pending and
        the oldest unconfirmed line has waited `delay` (or at once, when asked)."""
        if self._token is not None or not self._unconfirmed:
            return None
        if not at_once and now - self._unconfirmed[0][0] < self.delay:
            return None
        self._token = f"{TOKEN_PREFIX}{next(self._numbers)}"
        self._covers = -1
        return self._token

    @property
    def awaiting_pong(self) -> bool:
        """A PING was written and its PONG has not come yet."""
        return self._token is not None and self._covers >= 0

    def ack_written(self) -> None:
        """The pending PING was written: it confirms every line written so far."""
        if self._token is not None:
            self._covers = len(self._unconfirmed)

    def ack_dropped(self) -> None:
        """The pending PING will never be written (the outbox refused it): forget it, so that
        the next flush asks for another."""
        if self._token is not None and self._covers < 0:
            self._token = None

    def confirm(self, token: str) -> int:
        """A PONG: how many lines its PING confirmed (0 for any other token)."""
        if token != self._token or self._covers < 0:
            return 0
        for _ in range(self._covers):
            self._unconfirmed.popleft()
        confirmed, self._token, self._covers = self._covers, None, -1
        return confirmed

    def lost(self) -> list[Callable[[], object]]:
        """The connection is gone: the retractions of every unconfirmed line, newest first."""
        retractions = [on_lost for _, on_lost in reversed(self._unconfirmed)]
        self._unconfirmed.clear()
        self._token, self._covers = None, -1
        return retractions
