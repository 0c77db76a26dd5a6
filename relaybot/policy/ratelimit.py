"""Token buckets on an injected clock: the one rate-limit primitive the bot uses."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Holds up to `burst` tokens, refilled at `rate` tokens per second.

    The clock is injected so tests can move time by hand; nothing here sleeps.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0 or burst <= 0:
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._last = clock()

    def _refill(self) -> None:
        now = self.clock()
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def can_take(self, cost: float = 1.0) -> bool:
        return self.tokens >= cost

    def take(self, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are enough; otherwise spend nothing."""
        self._refill()
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def wait_time(self, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are available (inf if they never will be)."""
        missing = cost - self.tokens
        if missing <= 0:
            return 0.0
        if self.rate == 0 or cost > self.burst:
            return float("inf")
        return missing / self.rate

    @property
    def full(self) -> bool:
        return self.tokens >= self.burst
