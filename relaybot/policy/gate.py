"""When the bot replies: addressed by nick, in a private query, or (optionally) by chance;
and whether it may reply now: per-user and per-conversation budgets, cooldown, loop guards."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from relaybot.config.schema import PolicyConfig
from relaybot.conversation.identity import ContextKey
from relaybot.irc.text import casefold, strip_formatting
from relaybot.policy.ratelimit import TokenBucket

# Characters that may appear in a nick (RFC 2812 plus common extensions); used as word edges.
_NICK_CHARS = r"A-Za-z0-9\[\]\\`_\^\{\|\}\-"


def is_addressed(text: str, nick: str, casemapping: str = "rfc1459") -> bool:
    """`nick: hi`, `nick, hi`, or the nick mentioned anywhere as a word."""
    folded_text = casefold(strip_formatting(text), casemapping)
    folded_nick = casefold(nick, casemapping)
    pattern = rf"(?<![{_NICK_CHARS}]){re.escape(folded_nick)}(?![{_NICK_CHARS}])"
    return re.search(pattern, folded_text) is not None


@dataclass(frozen=True, slots=True)
class ReplyPolicy:
    on_mention: bool = True
    in_query: bool = True
    chance: float = 0.0

    def should_reply(
        self,
        *,
        text: str,
        sender: str,
        bot_nick: str,
        private: bool,
        casemapping: str = "rfc1459",
        random: Callable[[], float],
    ) -> bool:
        if casefold(sender, casemapping) == casefold(bot_nick, casemapping):
            return False
        if private:
            return self.in_query
        if self.on_mention and is_addressed(text, bot_nick, casemapping):
            return True
        return self.chance > 0.0 and random() < self.chance


@dataclass(slots=True)
class _Streak:
    nick: str
    count: int
    last: float


K = TypeVar("K", str, ContextKey)  # a user's casefolded nick, or a conversation

# Why the gate says no (`refusal`): logged, and counted by the metrics as decline reasons.
Refusal = Literal["loop_guard", "cooldown", "user_budget", "channel_budget"]


class ReplyGate:
    """Whether a reply that policy wants may be generated now: budgets, cooldown, loop and
    repeat guards. Pure bookkeeping on an injected clock; keys are casefolded by the caller.

    Bot loops: when the bot has answered the same nick `loop_limit` times in a row in one
    conversation with nobody else speaking, it stops answering that nick there until someone
    else speaks or the exchange pauses for `loop_reset` seconds. Two bots answering each other
    never pause, so they stop; a person who talks to the bot alone for a long time meets the
    same limit, which is the price of the guard.
    """

    MAX_TRACKED = 10_000

    def __init__(self, config: PolicyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._users: dict[str, TokenBucket] = {}
        self._channels: dict[ContextKey, TokenBucket] = {}
        self._last_reply: dict[ContextKey, float] = {}
        self._streaks: dict[ContextKey, _Streak] = {}
        self._recent_lines: dict[ContextKey, deque[tuple[float, str, str]]] = {}

    def configure(self, config: PolicyConfig) -> None:
        """Apply new limits (reload); existing buckets are rebuilt lazily."""
        self.config = config
        self._users.clear()
        self._channels.clear()

    def _bucket(
        self, table: dict[K, TokenBucket], key: K, per_minute: float, burst: int
    ) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            if len(table) >= self.MAX_TRACKED:
                for stale in [k for k, b in table.items() if b.full]:
                    del table[stale]
            bucket = table[key] = TokenBucket(per_minute / 60.0, burst, self.clock)
        return bucket

    def _user(self, user: str) -> TokenBucket:
        c = self.config
        return self._bucket(self._users, user, c.user_per_minute, c.user_burst)

    def _channel(self, conversation: ContextKey) -> TokenBucket:
        c = self.config
        return self._bucket(self._channels, conversation, c.channel_per_minute, c.channel_burst)

    def heard(self, conversation: ContextKey, nick: str, text: str) -> bool:
        """Record a line; False when it repeats one the same nick sent within repeat_window."""
        now = self.clock()
        recent = self._recent_lines.setdefault(conversation, deque(maxlen=20))
        while recent and now - recent[0][0] > self.config.repeat_window:
            recent.popleft()
        normalised = " ".join(text.split()).lower()
        repeated = any(n == nick and t == normalised for _, n, t in recent)
        recent.append((now, nick, normalised))
        streak = self._streaks.get(conversation)
        if streak is not None and streak.nick != nick:
            del self._streaks[conversation]  # someone else spoke: not a two-party loop
        if len(self._recent_lines) > self.MAX_TRACKED:
            self._recent_lines.pop(next(iter(self._recent_lines)))
        return not repeated

    def refusal(self, conversation: ContextKey, user: str) -> Refusal | None:
        """None if a reply to `user` may be generated now, else why not (for the log)."""
        now = self.clock()
        streak = self._streaks.get(conversation)
        if (
            streak is not None
            and streak.nick == user
            and now - streak.last > self.config.loop_reset
        ):
            del self._streaks[conversation]
            streak = None
        if streak is not None and streak.nick == user and streak.count >= self.config.loop_limit:
            return "loop_guard"
        last = self._last_reply.get(conversation)
        if last is not None and now - last < self.config.cooldown:
            return "cooldown"
        if not self._user(user).can_take():
            return "user_budget"
        if not self._channel(conversation).can_take():
            return "channel_budget"
        return None

    def cooldown_left(self, conversation: ContextKey) -> float:
        last = self._last_reply.get(conversation)
        return 0.0 if last is None else max(0.0, self.config.cooldown - (self.clock() - last))

    def admit(self, conversation: ContextKey, user: str) -> Refusal | None:
        """`refusal`, and when allowed, spend the budgets and count the exchange."""
        reason = self.refusal(conversation, user)
        if reason is not None:
            return reason
        now = self.clock()
        self._user(user).take()
        self._channel(conversation).take()
        self._last_reply[conversation] = now
        if len(self._last_reply) > self.MAX_TRACKED:
            self._prune(now)
        streak = self._streaks.get(conversation)
        if streak is not None and streak.nick == user:
            streak.count += 1
            streak.last = now
        else:
            self._streaks[conversation] = _Streak(user, 1, now)
        return None

    def _prune(self, now: float) -> None:
        # Old conversations can no longer be in cooldown or in a live streak.
        horizon = max(self.config.cooldown, self.config.loop_reset)
        for key in [k for k, t in self._last_reply.items() if now - t > horizon]:
            del self._last_reply[key]
            self._streaks.pop(key, None)

    def forget(self, conversation: ContextKey) -> None:
        self._streaks.pop(conversation, None)
        self._recent_lines.pop(conversation, None)
        self._last_reply.pop(conversation, None)
        self._channels.pop(conversation, None)

    def rate_summary(self) -> dict[str, int]:
        return {"tracked_users": len(self._users), "tracked_conversations": len(self._channels)}
