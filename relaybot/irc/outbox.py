"""The outgoing paced send queue: what the bot says to channels and nicks, and when.

This module owns pacing, ordering and freshness of queued lines (PRIVMSGs, NOTICEs); it never
touches a socket and never sleeps. The reactor loop calls `Outbox.due(now)` every turn and
writes what it returns. PONG and other protocol replies bypass it entirely (the `irc`
library's own rate limit sleeps on the reactor thread, so PONGs would wait too).

Pacing works like an IRC server's own "message timer" (fakelag): every line that goes
out adds its cost to a debt, `interval` seconds plus its wire length at
`bytes_per_second` (so long lines cost more), and elapsed time pays the debt back one
second per second. A line may go while the debt leaves room for `burst - 1` lines of the
longest length IRC allows, so an idle link sends `burst` lines at once whatever their
length, and after that each line waits for its own cost.

Order: one FIFO per target (casefolded channel or nick, "" for connection-level lines), and
the next line comes from the target that was served least recently. Busy targets take turns
one line each, and a target that has been quiet goes before all of them: its answer waits
for about one line, however long the busy targets' queues are.

Freshness: lines may belong to a `Batch` (one reply). A batch that has not started going out
by its deadline is dropped whole, and a newer batch with the same key for the same target
drops an older one that has not started; the batch's owner is told why. `wait()` says how
long a line queued now for a target would wait, so that callers can decline work whose lines
could not leave in time.

The defaults were measured against InspIRCd 3.15 and ngIRCd 26.1 with their default
flood settings (bench/flood_probe.py; tests/integration/test_flood.py proves a 200-line burst).
Not thread-safe: use it from the reactor thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

DEFAULT_BURST = 5
DEFAULT_INTERVAL = 1.1  # seconds per line ...
DEFAULT_BYTES_PER_SECOND = 2048  # ... plus one second per this many bytes on the wire
DEFAULT_MAX_QUEUED = 1000

MAX_LINE_BYTES = 512  # the IRC line limit, CRLF included
_CRLF = 2  # bytes the writer appends to every line
# Between the lines of one item that are written together (a draft/multiline batch).
LINE_BREAK = "\r\n"
_EPSILON = 1e-6  # seconds; float rounding must not cost a whole reactor turn
_SWEEP_EVERY = 0.5  # seconds between two sweeps for batches past their deadline
_MAX_REMEMBERED = 4096  # targets whose last turn is remembered; the oldest are forgotten


@dataclass(slots=True, eq=False)
class Batch:
    """Lines that go out together or not at all: one reply.

    Not started by `deadline` (the outbox's clock): dropped whole. `key` not None: a newer
    batch with the same key for the same target drops this one while it has not started.
    `requested` is when what it answers was asked (the outbox's clock), for the age of the
    oldest waiting reply. `on_dropped(reason)` hears "stale" or "superseded", once.
    """

    deadline: float | None = None
    key: Hashable | None = None
    requested: float | None = None
    on_dropped: Callable[[str], object] | None = None
    started: bool = False
    dropped: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One line to write (without CRLF), what to call once written, and its target.

    A draft/multiline batch is one item of several lines (joined by LINE_BREAK), written
    together. `target` is the casefolded channel or nick used for ordering; "" means
    connection-level. `on_lost` is called when the line was written but the connection died
    before the server confirmed it (relaybot.irc.delivery). `batch` is the reply it belongs
    to, if any.
    """

    line: str
    on_sent: Callable[[], None] | None = None
    target: str = ""
    on_lost: Callable[[], object] | None = None
    batch: Batch | None = None


class Outbox:
    """A non-blocking send queue paced by a debt clock, least recently served target first."""

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
        # Only non-empty queues, in the order they became non-empty (ties in `_served` go to
        # the one that has waited longest).
        self._queues: dict[str, deque[Outgoing]] = {}
        self._served: dict[str, int] = {}  # target -> serial of its last line; absent: never
        self._serial = 0
        self._size = 0
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        return self._size

    def cost(self, line: str) -> float:
        """Seconds of budget that writing `line` (plus CRLF) uses up; an item of several
        lines written together costs each of them."""
        count = line.count(LINE_BREAK) + 1
        size = len(line.encode("utf-8", errors="replace")) + _CRLF
        return self.interval * count + size / self.bytes_per_second

    def pending(self, target: str) -> int:
        """How many lines are queued for `target`."""
        queue = self._queues.get(target)
        return len(queue) if queue is not None else 0

    def push(self, item: Outgoing) -> bool:
        """Queue a line behind its target's others; False (not queued) when full. A line of
        a new batch drops the target's unstarted older batches with the same key."""
        if item.batch is not None and item.batch.key is not None:
            self._supersede(item.target, item.batch)
        if self._size >= self.max_queued:
            return False
        queue = self._queues.get(item.target)
        if queue is None:
            queue = self._queues[item.target] = deque()
        queue.append(item)
        self._size += 1
        return True

    def drop_target(self, target: str) -> list[Outgoing]:
        """Remove and return `target`'s queued lines (e.g. the channel was parted)."""
        queue = self._queues.pop(target, None)
        if queue is None:
            return []
        self._size -= len(queue)
        return list(queue)

    def clear(self) -> list[Outgoing]:
        """Remove and return every queued line, in the order they would have gone out."""
        dropped: list[Outgoing] = []
        while self._queues:
            dropped.append(self._pop_next())
        return dropped

    def due(self, now: float) -> list[Outgoing]:
        """Lines that may be written now, in order; the rest stay queued. Batches past their
        deadline that have not started are dropped on the way.

        `now` is a monotonic clock reading in seconds; nothing here sleeps.
        """
        self._debt = self._debt_at(now)
        if self._last is None or now > self._last:
            self._last = now
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            self._drop_stale(now)
        allowance = self._allowance()
        ready: list[Outgoing] = []
        while self._queues and self._debt <= allowance + _EPSILON:
            target = self._next_target()
            batch = self._queues[target][0].batch
            if batch is not None and not batch.started:
                if batch.deadline is not None and now > batch.deadline:
                    self.drop_batch(target, batch, "stale")  # not a turn: nothing went
                    continue
                batch.started = True
            item = self._take(target)
            self._debt += self.cost(item.line)
            ready.append(item)
        return ready

    def wait(self, target: str, now: float) -> float:
        """Seconds until a line queued now for `target` would be written, if nothing else
        arrived meanwhile."""
        debt = self._debt_at(now)
        own = self._queues.get(target)
        position = len(own) if own is not None else 0  # lines of its own before it
        order = {name: index for index, name in enumerate(self._queues)}
        rank = self._served.get(target, 0), order.get(target, len(order))
        ahead = sum(self.cost(item.line) for item in own or ())
        for other, queue in self._queues.items():
            if other == target:
                continue
            # Targets take turns in rank order: one that ranks first gets one turn more.
            first = (self._served.get(other, 0), order[other]) < rank
            turns = position + 1 if first else position
            for index, item in enumerate(queue):
                if index >= turns:
                    break
                ahead += self.cost(item.line)
        return max(0.0, debt + ahead - self._allowance())

    def oldest_request(self) -> float | None:
        """When the oldest reply still queued was asked for (a batch's `requested`)."""
        times = [
            item.batch.requested
            for queue in self._queues.values()
            for item in queue
            if item.batch is not None and item.batch.requested is not None
        ]
        return min(times, default=None)

    # --- inside -------------------------------------------------------------------------------

    def _allowance(self) -> float:
        return (self.burst - 1) * (self.interval + MAX_LINE_BYTES / self.bytes_per_second)

    def _debt_at(self, now: float) -> float:
        """The debt left at `now`, elapsed time paid back (a clock going backwards pays
        nothing)."""
        if self._last is not None and now > self._last:
            return max(0.0, self._debt - (now - self._last))
        return self._debt

    def _next_target(self) -> str:
        """The least recently served target with lines; ties: the one waiting longest."""
        return min(self._queues, key=lambda name: self._served.get(name, 0))

    def _take(self, target: str) -> Outgoing:
        queue = self._queues[target]
        item = queue.popleft()
        self._size -= 1
        if not queue:
            del self._queues[target]
        self._serial += 1
        self._served.pop(target, None)
        self._served[target] = self._serial  # insertion order: the oldest turns come first
        if len(self._served) > _MAX_REMEMBERED:
            # Forgotten targets rank as never served: they had waited longest anyway.
            del self._served[next(iter(self._served))]
        return item

    def _pop_next(self) -> Outgoing:
        return self._take(self._next_target())

    def _supersede(self, target: str, newer: Batch) -> None:
        queue = self._queues.get(target)
        if queue is None:
            return
        older = {
            id(item.batch): item.batch
            for item in queue
            if item.batch is not None
            and item.batch is not newer
            and item.batch.key == newer.key
            and not item.batch.started
        }
        for batch in older.values():
            self.drop_batch(target, batch, "superseded")

    def _drop_stale(self, now: float) -> None:
        stale = {
            (target, id(item.batch)): item.batch
            for target, queue in self._queues.items()
            for item in queue
            if item.batch is not None
            and not item.batch.started
            and item.batch.deadline is not None
            and now > item.batch.deadline
        }
        for (target, _), batch in stale.items():
            self.drop_batch(target, batch, "stale")

    def drop_batch(self, target: str, batch: Batch, reason: str) -> None:
        """Remove the batch's queued lines for `target` and tell its owner, once."""
        queue = self._queues.get(target)
        if queue is not None:
            kept = deque(item for item in queue if item.batch is not batch)
            self._size -= len(queue) - len(kept)
            if kept:
                self._queues[target] = kept
            else:
                del self._queues[target]
        if not batch.dropped:
            batch.dropped = True
            if batch.on_dropped is not None:
                batch.on_dropped(reason)
