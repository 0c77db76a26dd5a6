"""The worker's waiting jobs, handed out in turn by network: when several networks wait for
the shared engine, each gets the next free decode row in rotation, so that one busy network
cannot hold another's replies behind its own queue. Within a network, first come first served.
Thread-safe: networks put from their own threads, the inference thread takes."""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaybot.inference.worker import Job


class FairQueue:
    """A bounded queue of jobs (and the worker's stop marker, None) with `queue.Queue`'s
    put_nowait/get/get_nowait/qsize, which hands jobs out round-robin by network."""

    def __init__(self, maxsize: int, per_network: Callable[[str], int] | None = None) -> None:
        self.maxsize = maxsize
        # The most jobs one network may have waiting (read at each put, so a reload's new
        # limits apply): with it, one network's flood fills only its own share.
        self.per_network = per_network
        self._ready = threading.Condition()
        # Networks with jobs waiting, in the order they get their next turn.
        self._turns: OrderedDict[str, deque[Job]] = OrderedDict()
        self._size = 0
        self._stopped = False

    def qsize(self) -> int:
        with self._ready:
            return self._size

    def put_nowait(self, job: Job | None) -> None:
        """Raises queue.Full when `maxsize` jobs wait. None (stop) always goes in, and is
        taken before any job."""
        with self._ready:
            if job is None:
                self._stopped = True
            else:
                if self._size >= self.maxsize:
                    raise queue.Full
                network = job.key[0]
                waiting = self._turns.get(network)
                if (
                    waiting is not None
                    and self.per_network is not None
                    and len(waiting) >= self.per_network(network)
                ):
                    raise queue.Full
                if waiting is None:
                    # A network that had nothing waiting joins the back of the rotation.
                    waiting = self._turns[network] = deque()
                waiting.append(job)
                self._size += 1
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Job | None:
        """The next job in turn, waiting up to `timeout` (None: for ever); queue.Empty when
        none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._stopped and not self._size:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._ready.wait(remaining)
            return self._take()

    def get_nowait(self) -> Job | None:
        with self._ready:
            if not self._stopped and not self._size:
                raise queue.Empty
            return self._take()

    def _take(self) -> Job | None:
        if self._stopped:
            self._stopped = False  # one stop marker, taken once, as queue.Queue would
            return None
        network, waiting = next(iter(self._turns.items()))
        job = waiting.popleft()
        self._size -= 1
        del self._turns[network]
        if waiting:
            self._turns[network] = waiting  # to the back: the others go first
        return job
