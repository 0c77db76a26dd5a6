"""The bot's own lines waiting for their echo (IRCv3 echo-message).

Where the server gave echo-message, a PRIVMSG or NOTICE the bot writes counts as said when the
server sends it back: the echo proves the server relayed it, so no PING has to confirm it and
nothing has to be retracted (relaybot.irc.delivery is the path without echo-message). This
module owns the FIFO of written lines awaiting their echo and the matching of echoes to it.
Pure bookkeeping: no sockets, time from the clock it is given; the writer feeds it, logs what
it reports and calls the matched line's `on_sent`.

A server handles one client's lines in the order they were written and echoes them in that
order, so an echo that matches the i-th waiting line means the lines before it were never
relayed (refused with 404, a ban, +m): they are dropped, never recorded.

Not thread-safe: the reactor thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Lines that may wait for their echo at once; beyond it the oldest is taken as not echoed.
# The outbox holds as many, so a healthy server never comes near it.
DEFAULT_LIMIT = 1000
# Seconds the oldest line may wait for its echo before the server is taken to be one that
# acknowledged echo-message but does not echo (an echo normally takes one round trip).
MISSING_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class _Waiting:
    command: str  # PRIVMSG or NOTICE
    target: str  # casefolded
    text: str  # as written: CTCP ACTION framing included
    on_sent: Callable[[], None] | None
    written_at: float


@dataclass(frozen=True, slots=True)
class Echo:
    """What one echo matched: the `on_sent` of its line (None if it had none) and how many
    older lines it proved were never relayed."""

    on_sent: Callable[[], None] | None
    skipped: int


class Echoes:
    """The written lines, oldest first, that the server has not echoed yet."""

    def __init__(
        self,
        fold: Callable[[str], str],
        clock: Callable[[], float],
        *,
        limit: int = DEFAULT_LIMIT,
        missing_after: float = MISSING_AFTER,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.fold = fold
        self.clock = clock
        self.limit = limit
        self.missing_after = missing_after
        self._waiting: deque[_Waiting] = deque()
        self._warned = False  # `missing` reported once on this connection

    def __len__(self) -> int:
        """Lines written and not yet echoed."""
        return len(self._waiting)

    def written(
        self, command: str, target: str, text: str, on_sent: Callable[[], None] | None
    ) -> int:
        """A PRIVMSG/NOTICE was written; `on_sent` runs when its echo comes. Returns how many
        older lines the bound pushed out (taken as not echoed, never recorded): 0 or 1."""
        overflow = 0
        while len(self._waiting) >= self.limit:
            self._waiting.popleft()
            overflow += 1
        self._waiting.append(_Waiting(command, self.fold(target), text, on_sent, self.clock()))
        return overflow

    def echoed(self, command: str, target: str, text: str) -> Echo | None:
        """The server echoed a line of ours: the oldest waiting line it matches (command,
        casefolded target, exact text) and those before it leave the queue. None when it
        matches none (a line written outside the writer, or one already given up on)."""
        folded = self.fold(target)
        for index, waiting in enumerate(self._waiting):
            if waiting.command == command and waiting.target == folded and waiting.text == text:
                for _ in range(index):
                    self._waiting.popleft()
                self._waiting.popleft()
                return Echo(waiting.on_sent, index)
        return None

    def missing(self) -> float | None:
        """Seconds the oldest line has waited, the first time on this connection that this
        passes `missing_after`; otherwise None. Asked every loop turn, so that a server that
        never echoes is reported once, loudly, rather than silently recording nothing."""
        if self._warned or not self._waiting:
            return None
        waited = self.clock() - self._waiting[0].written_at
        if waited <= self.missing_after:
            return None
        self._warned = True
        return waited

    def lost(self) -> int:
        """The connection is gone: every waiting line is dropped unrecorded (no echo can come
        for it any more). Returns how many; the next connection may warn again."""
        count = len(self._waiting)
        self._waiting.clear()
        self._warned = False
        return count
