"""How old a reply may get before it is not worth sending (`[reply] max_age`): the deadline
each reply carries into the outbox, the check before a generation starts (could its lines
still leave in time?), what generation has been taking, and how many replies were dropped
for freshness, by reason, for status (and for the metrics, by conversation).

Reactor thread only. Times are on the reactor's monotonic clock, the one the outbox uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from relaybot.bridge.observer import DeclineReason, FailureReason, NoReplyObserver, ReplyObserver
from relaybot.conversation.identity import ContextKey
from relaybot.log import get_logger

log = get_logger(component="relay")

# Weight of the newest generation time in the running estimate.
_SMOOTHING = 0.2

# How the metrics file each reason a reply is dropped for: the bot chose not to send it (it
# came too late, or a newer one went instead), or it could not be sent.
_DECLINED: dict[str, DeclineReason] = {
    "stale": "stale",
    "superseded": "superseded",
    "backlog": "backlog",
}
_FAILED: dict[str, FailureReason] = {"outbox full": "outbox_full"}


class Freshness:
    def __init__(
        self,
        max_age: Callable[[], float],
        clock: Callable[[], float],
        observer: ReplyObserver | None = None,
    ) -> None:
        self.max_age = max_age  # read each time: a reload may change it
        self.clock = clock
        self.observer = observer if observer is not None else NoReplyObserver()
        self.expected_generation = 0.0  # seconds, a running average of recent completions
        self.dropped: Counter[str] = Counter()  # "stale", "superseded", "backlog", ...

    def deadline(self, requested_at: float) -> float:
        """When a reply to a request made at `requested_at` must have started going out."""
        return requested_at + self.max_age()

    def age(self, requested_at: float) -> float:
        return self.clock() - requested_at

    def is_stale(self, requested_at: float) -> bool:
        return self.clock() > self.deadline(requested_at)

    def generated(self, seconds: float) -> None:
        """A generation finished after `seconds`."""
        self.expected_generation += _SMOOTHING * (seconds - self.expected_generation)

    def too_late_to_start(self, send_wait: float) -> bool:
        """Whether a reply generated now could not start going out within the bound, given
        `send_wait` seconds of lines queued ahead of it. Generation counts at most half the
        bound: a slow model alone must not silence the bot (its late replies are dropped
        as stale, and logged, instead)."""
        generation = min(self.expected_generation, self.max_age() / 2)
        return send_wait + generation > self.max_age()

    def count(self, reason: str, key: ContextKey) -> None:
        """A reply to the conversation `key` was dropped, or not started, for `reason`."""
        self.dropped[reason.replace(" ", "_")] += 1
        if reason in _DECLINED:
            self.observer.declined(key, _DECLINED[reason])
        else:
            self.observer.failed(key, _FAILED.get(reason, "undelivered"))

    def drop(self, reason: str, key: ContextKey, requested_at: float, **context: Any) -> None:
        """A reply to the conversation `key` was dropped unsent for `reason` ("stale",
        "superseded", or why the outbox refused it): counted and logged, with its age, as
        `reply_dropped_<reason>`."""
        self.count(reason, key)
        age = round(self.age(requested_at), 1)
        if reason == "superseded":  # a newer reply goes instead: nothing lost
            log.info("reply_dropped_superseded", age_s=age, **context)
        elif reason == "stale":
            log.warning("reply_dropped_stale", age_s=age, **context)
        else:
            log.warning("reply_dropped", reason=reason, age_s=age, **context)
