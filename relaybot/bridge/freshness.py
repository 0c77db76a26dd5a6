"""How old a reply may get before it is not worth sending (`[reply] max_age`): the deadline
each reply carries into the outbox, the check before a generation starts (could its lines
still leave in time?), what generation has been taking, and how many replies were dropped
for freshness, by reason, for status.

Reactor thread only. Times are on the reactor's monotonic clock, the one the outbox uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from relaybot.log import get_logger

log = get_logger(component="relay")

# Weight of the newest generation time in the running estimate.
_SMOOTHING = 0.2


class Freshness:
    def __init__(self, max_age: Callable[[], float], clock: Callable[[], float]) -> None:
        self.max_age = max_age  # read each time: a reload may change it
        self.clock = clock
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

    def count(self, reason: str) -> None:
        self.dropped[reason] += 1

    def drop(self, reason: str, requested_at: float, **context: Any) -> None:
        """A reply was dropped unsent for `reason` ("stale", "superseded", ...): counted for
        status and logged, with its age, as `reply_dropped_<reason>`."""
        self.count(reason.replace(" ", "_"))
        age = round(self.age(requested_at), 1)
        if reason == "superseded":  # a newer reply goes instead: nothing lost
            log.info("reply_dropped_superseded", age_s=age, **context)
        elif reason == "stale":
            log.warning("reply_dropped_stale", age_s=age, **context)
        else:
            log.warning("reply_dropped", reason=reason, age_s=age, **context)
