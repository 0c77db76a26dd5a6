"""Continuous request scheduling for the remote engines: every request of a batch is its own
HTTP request on its own thread; replies are reported as they arrive, and requests the worker
queued meanwhile start as soon as a row is free, without waiting for the rest of the batch
(the server batches them)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

from relaybot.inference.engine import BatchFeed, Done, EngineError, GenerationRequest
from relaybot.inference.remote.responses import Fetched

# How often a running batch looks for newly queued requests while its replies are out: small
# next to any network round trip.
FEED_POLL_SECONDS = 0.02


class _Requests:
    """The requests of one batch: which are open, which were dropped, which failed."""

    def __init__(self, complete: Callable[[GenerationRequest], Fetched]) -> None:
        self._complete = complete
        self._finished: queue.Queue[tuple[int, Fetched | None, BaseException | None]] = (
            queue.Queue()
        )
        self.open: set[int] = set()
        self.dropped: set[int] = set()
        self.failures: list[BaseException] = []
        self.admitted = 0  # requests started, which numbers the next one

    def start(self, request: GenerationRequest) -> None:
        index = self.admitted
        self.admitted += 1
        self.open.add(index)
        thread = threading.Thread(
            target=self._run, args=(index, request), name=f"relaybot-remote-{index}", daemon=True
        )
        thread.start()

    def _run(self, index: int, request: GenerationRequest) -> None:
        try:
            self._finished.put((index, self._complete(request), None))
        except BaseException as exc:  # handed to the inference thread
            self._finished.put((index, None, exc))

    def collect(self, done: Done) -> None:
        """Wait a little for one request to end; report its reply unless it was dropped."""
        try:
            index, text, error = self._finished.get(timeout=FEED_POLL_SECONDS)
        except queue.Empty:
            return
        self.open.discard(index)
        if error is not None:
            self.failures.append(error)
        elif index not in self.dropped:
            done(index, text.text if text else "", text.cut if text else False)

    def raise_failures(self) -> None:
        for error in self.failures:
            if not isinstance(error, EngineError):
                raise error  # a bug: let the worker log it as engine_crashed
        if self.failures:
            raise EngineError(
                f"{self.failures[0]} ({len(self.failures)} of {self.admitted} requests failed)"
            )


def run_continuous(
    requests: Sequence[GenerationRequest],
    complete: Callable[[GenerationRequest], Fetched],
    done: Done,
    feed: BatchFeed | None,
    *,
    max_rows: int,
    interrupted: Callable[[], bool],
) -> None:
    """`complete` each request on a thread of its own and report its reply (index, text) when
    it arrives; requests from `feed` start as soon as fewer than `max_rows` are open (none
    once `interrupted`), numbered on from `len(requests)`. A failed request does not fail the
    others: they are reported, and EngineError names the failures at the end. A dropped
    request's answer is not reported (the HTTP request itself runs to its end)."""
    batch = _Requests(complete)
    for request in requests:
        batch.start(request)
    params = requests[0].params if requests else None
    while batch.open:
        batch.collect(done)
        if feed is None or params is None:
            continue
        batch.dropped.update(index for index in batch.open if feed.dropped(index))
        free = max_rows - len(batch.open)
        if free > 0 and not interrupted():
            for request in feed.admit(free, params):
                batch.start(request)
    batch.raise_failures()
