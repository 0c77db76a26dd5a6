"""The inference thread: takes immutable jobs, batches what is pending, returns completions.

With an engine that batches continuously, jobs submitted while a batch decodes join it between
two steps (when they share its sampling settings), and a job cancelled mid-generation leaves
the batch at the next step.

It never touches bot state: results go to a callback that only enqueues them for the reactor
thread. It also passes "forget this conversation" on to an engine that keeps per-conversation
state (a cached KV prefix), and tells an observer (relaybot.inference.observer) when each job
starts, what it cost and how large each batch was.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relaybot.conversation.identity import ContextKey
from relaybot.inference.engine import Engine, EngineError, GenerationRequest, SamplingParams
from relaybot.inference.fairness import FairQueue
from relaybot.inference.observer import NoWorkerObserver, TokenCounts, WorkerObserver
from relaybot.log import get_logger

log = get_logger(component="worker")

_RECENT_JOBS = 4096


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    key: ContextKey  # (network, casefolded channel or query peer)
    reply_to: str  # where the reply goes: the channel, or the peer's nick
    speaker: str  # the role the model writes as
    request: GenerationRequest
    log_context: dict[str, Any] = field(default_factory=dict)
    # When the line it answers asked for it, on the reactor's monotonic clock; None for jobs
    # no reply waits on (an operator's `ask`).
    requested_at: float | None = None
    # The msgid of the line it answers (IRCv3), for the reply to thread to; None: unthreaded.
    answers: str | None = None
    asker: str | None = None  # the nick whose line asked for it (who may ask for `more`)


@dataclass(frozen=True, slots=True)
class Completion:
    job: Job
    text: str | None
    error: str | None
    seconds: float
    batch_size: int
    # The model was still writing when `max_new_tokens` ran out (as far as the engine tells).
    cut: bool = False


class InferenceWorker:
    """One thread, one engine. `submit` is safe from any thread; `on_complete` is called on
    the worker thread and must only hand the completion over (e.g. put it on a queue)."""

    def __init__(
        self,
        engine: Engine,
        on_complete: Callable[[Completion], None],
        *,
        max_batch: int = 8,
        max_pending: int = 64,
        max_pending_per_network: Callable[[str], int] | None = None,
        batch_window: float = 0.01,
        continuous: bool = True,
        observer: WorkerObserver | None = None,
    ) -> None:
        self.engine = engine
        self.observer = observer if observer is not None else NoWorkerObserver()
        self.on_complete = on_complete
        self.max_batch = max_batch
        # How long the first job of a batch waits for company: jobs submitted together (a
        # burst across channels) then share one batch instead of the first running alone.
        self.batch_window = batch_window
        self.continuous = continuous
        # Jobs taken from the queue while a batch ran that could not join it (other sampling
        # settings); they start the next batch. Inference thread only.
        self._held: deque[Job] = deque()
        # Taken in turn by network, so that one busy network cannot starve another.
        self._queue = FairQueue(max_pending, per_network=max_pending_per_network)
        self._thread = threading.Thread(target=self._run, name="relaybot-inference", daemon=True)
        self._stopping = threading.Event()
        self._cancelled: set[int] = set()
        self._cancel_lock = threading.Lock()
        # Conversation of each recent job, so that cancelling a job (a reset, a part) also
        # drops the engine's state for it, even when the job has just completed.
        self._job_keys: OrderedDict[int, ContextKey] = OrderedDict()

    def start(self) -> None:
        # A worker stopped earlier on this engine interrupted it for good; this one needs it
        # generating in full again.
        resume = getattr(self.engine, "resume", None)
        if callable(resume):
            resume()
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """False when the queue is full (the caller logs and drops the request)."""
        if self._stopping.is_set():
            return False
        with self._cancel_lock:
            self._job_keys[job.job_id] = job.key
            while len(self._job_keys) > _RECENT_JOBS:
                self._job_keys.popitem(last=False)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._cancel_lock:
                self._job_keys.pop(job.job_id, None)
            return False
        return True

    def cancel(self, job_id: int) -> None:
        """Thread-safe: a job still queued is skipped, never generated (its channel was
        reset, parted or muted). A job already generating leaves its batch at the next step
        with an engine that batches continuously; with others it finishes and its completion
        is dropped. What the engine keeps for the job's conversation is dropped too."""
        with self._cancel_lock:
            self._cancelled.add(job_id)
            key = self._job_keys.get(job_id)
        if key is not None:
            self.forget(key)

    def forget(self, key: ContextKey) -> None:
        """Thread-safe: drop the engine's state for a conversation (reset, part), if it keeps
        any. Takes effect at once, even while that conversation is generating."""
        forget = getattr(self.engine, "forget", None)
        if callable(forget):
            forget(key)

    def _is_cancelled(self, job: Job) -> bool:
        with self._cancel_lock:
            if job.job_id in self._cancelled:
                self._cancelled.discard(job.job_id)
                return True
            return False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        interrupt = getattr(self.engine, "interrupt", None)
        if callable(interrupt):
            interrupt()  # a generation in progress ends at its next step
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take_batch(self) -> list[Job]:
        if self._held:
            batch = [self._held.popleft() for _ in range(min(self.max_batch, len(self._held)))]
        else:
            first = self._queue.get()
            if first is None:
                return []
            batch = [first]
        deadline = time.monotonic() + self.batch_window
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    job = self._queue.get(timeout=remaining)
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stopping.set()
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._take_batch()
            if not batch:
                break
            live = [job for job in batch if not self._is_cancelled(job)]
            if len(live) < len(batch):
                log.info("jobs_cancelled", count=len(batch) - len(live))
            with self._cancel_lock:
                # Ids of jobs that already ran can never match again: do not let them pile up.
                if len(self._cancelled) > 10_000:
                    self._cancelled.clear()
            if live:
                self._run_batch(live)

    def _run_batch(self, batch: list[Job]) -> None:
        continuous = getattr(self.engine, "generate_continuous", None)
        if self.continuous and callable(continuous):
            self._run_continuous(batch, continuous)
            return
        each = getattr(self.engine, "generate_each", None)
        if callable(each):
            self._run_streaming(batch, each)
            return
        started = time.monotonic()
        for job in batch:
            self._started(job, started)
        try:
            texts: list[str | None] = list(self.engine.generate([job.request for job in batch]))
            error = None
            if len(texts) != len(batch):
                raise EngineError(f"engine returned {len(texts)} texts for {len(batch)} requests")
        except EngineError as exc:
            texts, error = [None] * len(batch), str(exc)
        except Exception as exc:  # an engine bug must not kill the inference thread
            log.exception("engine_crashed", batch_size=len(batch))
            texts, error = [None] * len(batch), f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        for index, (job, text) in enumerate(zip(batch, texts, strict=True)):
            if text is not None:
                self._generated(job, index)
            self.on_complete(Completion(job, text, error, seconds, len(batch)))
        self.observer.batch(len(batch))

    def _run_streaming(self, batch: list[Job], each: Callable[..., None]) -> None:
        """Each reply is handed over as soon as its row stops, not when the batch ends."""

        def without_feed(requests: Any, done: Any, feed: Any, *, max_rows: int) -> None:
            each(requests, done)

        self._run_continuous(batch, without_feed)

    def _run_continuous(self, batch: list[Job], generate: Callable[..., None]) -> None:
        """Each reply is handed over as soon as its row stops, and jobs submitted meanwhile
        join the running batch when the engine takes them from the feed."""
        feed = _QueueFeed(self, batch)
        delivered: set[int] = set()

        def done(index: int, text: str, cut: bool = False) -> None:
            if 0 <= index < len(feed.jobs) and index not in delivered:
                delivered.add(index)
                self._generated(feed.jobs[index], index)
                seconds = time.monotonic() - feed.admitted_at[index]
                self.on_complete(
                    Completion(feed.jobs[index], text, None, seconds, len(feed.jobs), cut)
                )

        error = "engine returned no text for this request"
        try:
            generate([job.request for job in batch], done, feed, max_rows=self.max_batch)
        except EngineError as exc:
            error = str(exc)
        except Exception as exc:  # an engine bug must not kill the inference thread
            log.exception("engine_crashed", batch_size=len(feed.jobs))
            error = f"{type(exc).__name__}: {exc}"
        if feed.joined:
            log.debug("jobs_joined_batch", count=feed.joined, batch_size=len(feed.jobs))
        if feed.dropped_indices:
            log.info("jobs_cancelled", count=len(feed.dropped_indices), while_generating=True)
        now = time.monotonic()
        for index, job in enumerate(feed.jobs):
            if index not in delivered:
                reason = "cancelled" if index in feed.dropped_indices else error
                seconds = now - feed.admitted_at[index]
                self.on_complete(Completion(job, None, reason, seconds, len(feed.jobs)))
        self.observer.batch(len(feed.jobs))

    def _started(self, job: Job, now: float) -> None:
        """`job` begins generating at `now` (time.monotonic, the clock the reactor stamps
        `requested_at` with: the session's default clock)."""
        if job.requested_at is not None:
            self.observer.started(job.key[0], max(0.0, now - job.requested_at))

    def _generated(self, job: Job, index: int) -> None:
        """`job`, request `index` of the engine's batch, is done: its token counts, where the
        engine keeps them (the local engine's `last_stats`, filled before it reports a row)."""
        stats = getattr(self.engine, "last_stats", None)
        counts = stats.get(index) if isinstance(stats, dict) else None
        if isinstance(counts, TokenCounts):
            self.observer.generated(job.key[0], counts)
            if counts.first_token_at is not None and job.requested_at is not None:
                waited = max(0.0, counts.first_token_at - job.requested_at)
                self.observer.first_token(job.key[0], waited)


class _QueueFeed:
    """The worker's queue as a running batch's source of more work (inference thread)."""

    def __init__(self, worker: InferenceWorker, batch: list[Job]) -> None:
        self.worker = worker
        self.jobs = list(batch)
        now = time.monotonic()
        self.admitted_at = [now] * len(batch)
        for job in batch:
            worker._started(job, now)
        self.joined = 0
        self.dropped_indices: set[int] = set()

    def admit(self, free: int, params: SamplingParams) -> Sequence[GenerationRequest]:
        worker = self.worker
        if worker._held or worker._stopping.is_set():
            return []  # let this batch drain: the held jobs go next
        admitted: list[GenerationRequest] = []
        while len(admitted) < free:
            try:
                job = worker._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                worker._stopping.set()
                break
            if worker._is_cancelled(job):
                log.info("jobs_cancelled", count=1)
                continue
            if job.request.params != params:
                worker._held.append(job)
                break
            self.jobs.append(job)
            self.admitted_at.append(time.monotonic())
            worker._started(job, self.admitted_at[-1])
            admitted.append(job.request)
        self.joined += len(admitted)
        return admitted

    def dropped(self, index: int) -> bool:
        if index >= len(self.jobs) or not self.worker._is_cancelled(self.jobs[index]):
            return False
        self.dropped_indices.add(index)
        return True
