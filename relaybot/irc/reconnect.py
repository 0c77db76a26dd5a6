"""When to reconnect and whether the link is alive: pure decisions on an injected clock.

`Backoff` is a jittered exponential delay that starts small, is capped, and resets once a
connection has stayed up long enough. `Liveness` notices silence: it asks for a PING after
`ping_interval` quiet seconds and declares the link dead when `ping_timeout` more pass
without a byte from the server (the `irc` library's keepalive never checks for the PONG).
"""

from __future__ import annotations

import random as random_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


class Backoff:
    def __init__(
        self,
        minimum: float,
        maximum: float,
        *,
        stable_after: float,
        jitter: float = 0.2,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.stable_after = stable_after
        self.jitter = jitter
        self.random = random
        self._next = minimum
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        self._up_since = now

    def next_delay(self, now: float) -> float:
        """The delay before the next attempt, after a failure or a lost connection."""
        if self._up_since is not None and now - self._up_since >= self.stable_after:
            self._next = self.minimum  # it was a good connection: start over
        self._up_since = None
        base = self._next
        self._next = min(self.maximum, self._next * 2)
        spread = base * self.jitter
        return max(0.0, base - spread + 2 * spread * self.random())


Verdict = Literal["ping", "dead"] | None


@dataclass(slots=True)
class Liveness:
    ping_interval: float
    ping_timeout: float
    last_heard: float = 0.0
    ping_sent: float | None = None

    def heard(self, now: float) -> None:
        self.last_heard = now
        self.ping_sent = None

    def reset(self, now: float) -> None:
        self.heard(now)

    def check(self, now: float) -> Verdict:
        if self.ping_sent is not None:
            return "dead" if now - self.ping_sent >= self.ping_timeout else None
        if now - self.last_heard >= self.ping_interval:
            self.ping_sent = now
            return "ping"
        return None
