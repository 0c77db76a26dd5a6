"""A non-blocking paced send queue: a token bucket that the reactor loop drains.

The `irc` library's own rate limit sleeps on the reactor thread (PONGs wait too) and has no
burst; this one never blocks, and protocol replies bypass it entirely.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outgoing:
    line: str
    on_sent: Callable[[], None] | None = None


class Outbox:
    def __init__(self, *, burst: int = 4, interval: float = 1.0, max_queued: int = 500) -> None:
        self.burst = burst
        self.interval = interval  # seconds per line once the burst is spent
        self.max_queued = max_queued
        self._tokens = float(burst)
        self._last: float | None = None
        self._queue: deque[Outgoing] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, item: Outgoing) -> bool:
        if len(self._queue) >= self.max_queued:
            return False
        self._queue.append(item)
        return True

    def clear(self) -> list[Outgoing]:
        dropped = list(self._queue)
        self._queue.clear()
        return dropped

    def due(self, now: float) -> list[Outgoing]:
        """Lines that may be written now; the rest stay queued."""
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) / self.interval)
        self._last = now
        ready: list[Outgoing] = []
        while self._queue and self._tokens >= 1.0:
            self._tokens -= 1.0
            ready.append(self._queue.popleft())
        return ready
