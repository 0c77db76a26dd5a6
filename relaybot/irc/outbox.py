"""The outgoing paced send queue: what the bot says to channels and nicks, and when.

This module owns pacing and fairness of queued lines (PRIVMSGs, NOTICEs); it never
touches a socket and never sleeps. The reactor loop calls `Outbox.due(now)` every turn
and writes what it returns. PONG and other protocol replies bypass it entirely (the `irc`
library's own rate limit sleeps on the reactor thread, so PONGs would wait too).

Pacing works like an IRC server's own "message timer" (fakelag): every line that goes
out adds its cost to a debt, `interval` seconds plus its wire length at
`bytes_per_second` (so long lines cost more), and elapsed time pays the debt back one
second per second. A line may go while the debt leaves room for `burst - 1` lines of the
longest length IRC allows, so an idle link sends `burst` lines at once whatever their
length, and after that each line waits for its own cost.

Fairness: one FIFO per target (casefolded channel or nick, "" for connection-level
lines), served round-robin, so a target with hundreds of queued lines delays another
target's line by at most about one line per busy target.

The defaults were measured against InspIRCd 3.15 and ngIRCd 26.1 with their default
flood settings (bench/flood_probe.py; tests/integration/test_flood.py proves a 200-line burst).
Not thread-safe: use it from the reactor thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BURST = 5
DEFAULT_INTERVAL = 1.1  # seconds per line ...
DEFAULT_BYTES_PER_SECOND = 2048  # ... plus one second per this many bytes on the wire
DEFAULT_MAX_QUEUED = 1000

MAX_LINE_BYTES = 512  # the IRC line limit, CRLF included
_CRLF = 2  # bytes the writer appends to every line
_EPSILON = 1e-6  # seconds; float rounding must not cost a whole reactor turn


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One line to write (without CRLF), what to call once written, and its target.

    `target` is the casefolded channel or nick used for fairness; "" means
    connection-level. `on_lost` is called when the line was written but the connection died
    before the server confirmed it (relaybot.irc.delivery).
    """

    line: str
    on_sent: Callable[[], None] | None = None
    target: str = ""
    on_lost: Callable[[], object] | None = None


class Outbox:
    """A non-blocking, per-target round-robin send queue paced by a debt clock."""

    def __init__(
        self,
        *,
        burst: int = DEFAULT_BURST,
        interval: float = DEFAULT_INTERVAL,
        bytes_per_second: int = DEFAULT_BYTES_PER_SECOND,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if interval < 0:
            raise ValueError("interval must be >= 0")
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0")
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.burst = burst
        self.interval = interval
        self.bytes_per_second = bytes_per_second
        self.max_queued = max_queued
        self._debt = 0.0  # seconds of sending owed; paid back by elapsed time
        self._last: float | None = None  # `now` of the previous due() call
        self._queues: dict[str, deque[Outgoing]] = {}  # only non-empty queues
        self._turns: deque[str] = deque()  # targets with queued lines, next to serve first
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def cost(self, line: str) -> float:
        """Seconds of budget that writing `line` (plus CRLF) uses up."""
        size = len(line.encode("utf-8", errors="replace")) + _CRLF
        return self.interval + size / self.bytes_per_second

    def pending(self, target: str) -> int:
        """How many lines are queued for `target`."""
        queue = self._queues.get(target)
        return len(queue) if queue is not None else 0

    def push(self, item: Outgoing) -> bool:
        """Queue a line behind its target's others; False (not queued) when full."""
        if self._size >= self.max_queued:
            return False
        queue = self._queues.get(item.target)
        if queue is None:
            queue = self._queues[item.target] = deque()
            self._turns.append(item.target)  # a new target waits one rotation at most
        queue.append(item)
        self._size += 1
        return True

    def drop_target(self, target: str) -> list[Outgoing]:
        """Remove and return `target`'s queued lines (e.g. the channel was parted)."""
        queue = self._queues.pop(target, None)
        if queue is None:
            return []
        self._turns.remove(target)
        self._size -= len(queue)
        return list(queue)

    def clear(self) -> list[Outgoing]:
        """Remove and return every queued line, in the order they would have gone out."""
        dropped: list[Outgoing] = []
        while self._turns:
            dropped.append(self._pop_next())
        return dropped

    def due(self, now: float) -> list[Outgoing]:
        """Lines that may be written now, in order; the rest stay queued.

        `now` is a monotonic clock reading in seconds; nothing here sleeps.
        """
        if self._last is not None and now > self._last:
            self._debt = max(0.0, self._debt - (now - self._last))
        if self._last is None or now > self._last:
            self._last = now
        allowance = (self.burst - 1) * (self.interval + MAX_LINE_BYTES / self.bytes_per_second)
        ready: list[Outgoing] = []
        while self._turns and self._debt <= allowance + _EPSILON:
            item = self._pop_next()
            self._debt += self.cost(item.line)
            ready.append(item)
        return ready

    def _pop_next(self) -> Outgoing:
        """Take the next line round-robin: one from the target at the front of the turn."""
        target = self._turns.popleft()
        queue = self._queues[target]
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._turns.append(target)
        else:
            del self._queues[target]
        return item
