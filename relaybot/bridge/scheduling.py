"""When each conversation's reply is generated: one job in flight per conversation, the reply
gate's budgets (a request inside the cooldown waits it out), backpressure (no generation whose
lines could not leave within `[reply] max_age`, given what is queued to go out), the
concurrency cap with a bounded queue of waiting conversations (a request that waited past the
bound is dropped), and which job belongs to which conversation now.

Reactor thread only. Jobs go to the inference worker through `JobQueue`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from relaybot.bridge.freshness import Freshness
from relaybot.bridge.observer import NoReplyObserver, ReplyObserver
from relaybot.bridge.ports import JobQueue, Timers
from relaybot.conversation.identity import ContextKey
from relaybot.inference.worker import Job
from relaybot.log import get_logger
from relaybot.policy.gate import ReplyGate

log = get_logger(component="relay")


@dataclass(frozen=True, slots=True)
class Wanted:
    """A conversation wants a reply."""

    reply_to: str
    speaker: str
    asker: str
    gated: bool  # False for an operator's retry, which skips budgets and backpressure
    requested_at: float  # when the line asked, on the reactor's monotonic clock
    msgid: str | None = None  # the asking line's IRCv3 msgid: the reply is threaded to it
    more: bool = False  # `more`: the next part of the conversation's last answer
    privately: bool = False  # that part goes to the asker by private message


class Conversations(Protocol):
    """The conversations the scheduler schedules for (the relay)."""

    def name_of(self, key: ContextKey) -> str | None:
        """The conversation's current name (channel, or the peer's nick), None once gone."""
        ...

    def is_muted(self, key: ContextKey) -> bool: ...

    def job_for(self, key: ContextKey, wanted: Wanted, job_id: int) -> Job | None:
        """The job that generates the reply now; None when nothing is to be generated (the
        conversation is gone, or a `more` was answered from text generated before)."""
        ...


class ReplyScheduler:
    def __init__(
        self,
        *,
        network: str,
        jobs: JobQueue,
        conversations: Conversations,
        fold: Callable[[str], str],
        gate: ReplyGate | None = None,
        timers: Timers | None = None,
        max_concurrent: int = 1_000_000,
        max_waiting: int = 64,
        freshness: Freshness | None = None,
        send_delay: Callable[[str], float] | None = None,
        on_start: Callable[[ContextKey, Job], None] | None = None,
        job_ids: Iterator[int] | None = None,
        observer: ReplyObserver | None = None,
    ) -> None:
        self.on_start = on_start  # a reply's generation started (typing notices)
        self.observer = observer if observer is not None else NoReplyObserver()  # declines
        self.network = network
        self.freshness = freshness
        self.send_delay = send_delay  # seconds a line for a target would wait to go out
        self.jobs = jobs
        self.conversations = conversations
        self.fold = fold
        self.gate = gate
        self.timers = timers
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        # Conversations waiting out a cooldown, each with the token of its one live timer; a
        # reply that starts there by any path consumes the entry, and a timer whose token is
        # no longer there has nothing left to answer.
        self._deferred: dict[ContextKey, int] = {}
        self._deferral_tokens = itertools.count(1)
        # The one job in flight per conversation, and where each job's reply belongs now
        # (a query follows its peer across nick changes; a forgotten context has no entry).
        self._in_flight: dict[ContextKey, int] = {}
        self._job_keys: dict[int, ContextKey] = {}
        self._job_requested: dict[int, float] = {}  # for the oldest request still unanswered
        self._wanted_again: dict[ContextKey, Wanted] = {}
        # Conversations waiting for a generation slot, oldest first; one entry each, so the
        # newest request of a conversation replaces its older one.
        self._waiting: OrderedDict[ContextKey, Wanted] = OrderedDict()
        # Shared by every network on one worker, whose cancellations go by job id.
        self._job_ids = job_ids if job_ids is not None else itertools.count(1)

    def in_flight(self) -> int:
        return len(self._in_flight)

    def waiting(self) -> int:
        return len(self._waiting)

    def is_busy(self, key: ContextKey) -> bool:
        return key in self._in_flight

    def new_job_id(self) -> int:
        """A job id no reply uses (other kinds of job, such as `ask`, share the sequence)."""
        return next(self._job_ids)

    def want(self, key: ContextKey, wanted: Wanted) -> None:
        """Ask for a reply in a conversation, subject to budgets and the concurrency cap."""
        context = {"network": self.network, "channel": wanted.reply_to, "nick": wanted.asker}
        if self.conversations.is_muted(key):
            log.debug("reply_declined", reason="muted", **context)
            self.observer.declined(key, "muted")
            return
        if key in self._in_flight:
            # One reply per conversation at a time; answer the newest lines when it lands.
            self._wanted_again[key] = wanted
            return
        if wanted.gated and self._backlogged(key, wanted, context):
            return
        if wanted.gated and self.gate is not None:
            reason = self.gate.admit(key, self.fold(wanted.asker))
            if reason == "cooldown" and self.timers is not None:
                # Someone asked while the last reply was still fresh: answer a little later.
                if key not in self._deferred:
                    token = self._deferred[key] = next(self._deferral_tokens)
                    self.timers.schedule(
                        self.gate.cooldown_left(key) + 0.01,
                        lambda: self._after_cooldown(key, wanted, token),
                    )
                return
            if reason is not None:
                log.info("reply_declined", reason=reason, **context)
                self.observer.declined(key, reason)
                return
        if len(self._in_flight) >= self.max_concurrent:
            self._waiting.pop(key, None)
            self._waiting[key] = wanted
            while len(self._waiting) > self.max_waiting:
                dropped_key, dropped = self._waiting.popitem(last=False)
                self.observer.declined(dropped_key, "queue_full")
                log.warning(
                    "reply_dropped_queue_full",
                    network=self.network,
                    channel=dropped.reply_to,
                    waiting=len(self._waiting),
                )
            return
        self._start(key, wanted)

    def _backlogged(self, key: ContextKey, wanted: Wanted, context: dict[str, str]) -> bool:
        """Too many lines queued to go out for a reply started now to leave in time: declined
        before it spends budget or generation."""
        if self.freshness is None or self.send_delay is None:
            return False
        wait = self.send_delay(wanted.reply_to)
        if not self.freshness.too_late_to_start(wait):
            return False
        self.freshness.count("backlog", key)
        log.info(
            "reply_declined",
            reason="backlog",
            send_wait_s=round(wait, 1),
            generation_s=round(self.freshness.expected_generation, 1),
            **context,
        )
        return True

    def oldest_request(self) -> float | None:
        """When the oldest request still being generated or waiting for a slot was made."""
        times = [*self._job_requested.values()]
        times += [wanted.requested_at for wanted in self._waiting.values()]
        return min(times, default=None)

    def _after_cooldown(self, key: ContextKey, wanted: Wanted, token: int) -> None:
        if self._deferred.get(key) != token:
            # Cancelled meanwhile (reset, part, mute), or a reply that started since has
            # answered the lines this request was for: nothing new to answer.
            return
        del self._deferred[key]
        name = self.conversations.name_of(key)
        if name is not None:
            self.want(key, dataclasses.replace(wanted, reply_to=name))

    def _start(self, key: ContextKey, wanted: Wanted) -> None:
        job = self.conversations.job_for(key, wanted, next(self._job_ids))
        if job is None:
            return
        if self.jobs.submit(job):
            self._in_flight[key] = job.job_id
            self._job_keys[job.job_id] = key
            self._job_requested[job.job_id] = wanted.requested_at
            # At most one pending reply per conversation: this one answers every line so far,
            # so a request still deferred or waiting for a slot there is consumed.
            self._deferred.pop(key, None)
            self._waiting.pop(key, None)
            log.info("reply_requested", job=job.job_id, **job.log_context)
            if self.on_start is not None:
                self.on_start(key, job)
        else:
            log.warning("reply_dropped_queue_full", **job.log_context)
            self.observer.declined(key, "queue_full")

    def start_waiting(self) -> None:
        """Start waiting conversations (those still there) while there are slots."""
        while self._waiting and len(self._in_flight) < self.max_concurrent:
            key, wanted = self._waiting.popitem(last=False)
            if self.freshness is not None and self.freshness.is_stale(wanted.requested_at):
                self.freshness.drop(
                    "stale",
                    key,
                    wanted.requested_at,
                    stage="waiting",
                    network=self.network,
                    channel=wanted.reply_to,
                    nick=wanted.asker,
                )
            elif self.conversations.name_of(key) is not None:
                self._start(key, wanted)

    def finished(self, job_id: int) -> tuple[ContextKey | None, Wanted | None]:
        """A job's completion came back: the conversation it belongs to now (None when that
        was forgotten), and the request that waited for it there, if any."""
        key = self._job_keys.pop(job_id, None)
        self._job_requested.pop(job_id, None)
        if key is None:
            return None, None
        if self._in_flight.get(key) == job_id:
            del self._in_flight[key]
        return key, self._wanted_again.pop(key, None)

    def cancel(self, key: ContextKey) -> None:
        """Drop what is pending for a conversation: waiting requests, a reply in flight (its
        slot goes to the next waiting conversation), and the engine's cached prefix."""
        self.jobs.forget(key)
        self._wanted_again.pop(key, None)
        self._waiting.pop(key, None)
        self._deferred.pop(key, None)
        job_id = self._in_flight.pop(key, None)
        if job_id is None:
            return
        self._job_keys.pop(job_id, None)
        self._job_requested.pop(job_id, None)
        self.jobs.cancel(job_id)  # skipped if queued, stopped if decoding; reply dropped
        self.start_waiting()

    def drop_idle(self, key: ContextKey) -> None:
        """An idle conversation is evicted: forget its pending requests."""
        self._wanted_again.pop(key, None)
        self._waiting.pop(key, None)

    def moved(self, old: ContextKey, new: ContextKey, reply_to: str) -> None:
        """A query follows its peer to a new nick, with its reply in flight."""
        if old in self._in_flight:
            job_id = self._in_flight.pop(old)
            self._in_flight[new] = job_id
            self._job_keys[job_id] = new
        for table in (self._wanted_again, self._waiting):
            if old in table:
                wanted = table.pop(old)
                table[new] = dataclasses.replace(wanted, reply_to=reply_to)
