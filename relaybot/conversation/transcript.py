"""Rolling per-channel context: IRC events become Relay turns, bounded by a token budget.

A context keeps a header (the bot's own join, the topic, a persona bio) that is never trimmed,
and a rolling list of turns trimmed from the oldest when the budget is exceeded. Trimming drops a
chunk of turns at once, so the start of the prompt (and an engine's cached prefix) stays the
same across many messages instead of shifting by one turn on each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from relaybot.conversation.formats import EMPTY_MESSAGE, Turn
from relaybot.irc.events import Action, IrcEvent, Join, Kick, Message, NickChange, Part, Quit, Topic
from relaybot.irc.text import safe_line

SYSTEM = "system"
# The two roles Relay was trained on: the model speaks as `user`, the human as `anon`.
QUERY_BOT_ROLE = "user"
QUERY_PEER_ROLE = "anon"

TokenCounter = Callable[[str], int]


def bot_join_turns(bot_nick: str, channel: str) -> list[Turn]:
    return [Turn(bot_nick, f"/join {channel}"), Turn(SYSTEM, f"* Now talking in {channel}")]


def _bio_prefix(bot_nick: str) -> str:
    return f"* {bot_nick}'s bio: "


def cast_turns(caster: str, bot_nick: str, bio: str) -> list[Turn]:
    """Relay's persona turn, as the reference client's /cast writes it."""
    return [Turn(caster, f"/whois {bot_nick}"), Turn(SYSTEM, f"{_bio_prefix(bot_nick)}{bio}")]


def split_persona(turns: Sequence[Turn], bot_nick: str) -> tuple[str | None, list[Turn]]:
    """The bio `cast_turns` put among `turns`, and the turns without that pair: for formats
    that carry the persona elsewhere (the instruct formats' system prompt). (None, the turns)
    when there is none.

    Only a system turn is taken for the bio, and no one's line becomes a system turn that
    reads `* <bot>'s bio:` (an action or a quit is `* <their nick> …`, and no nick holds `'`),
    so what is found here is the persona an operator set."""
    prefix = _bio_prefix(bot_nick)
    for index, turn in enumerate(turns):
        if turn.role == SYSTEM and turn.content.startswith(prefix):
            whois = index > 0 and turns[index - 1].content == f"/whois {bot_nick}"
            start = index - 1 if whois else index
            return turn.content[len(prefix) :], [*turns[:start], *turns[index + 1 :]]
    return None, list(turns)


def topic_line(channel: str, topic: str) -> Turn:
    return Turn(SYSTEM, f"* Topic for {channel} is: {topic}")


def channel_event_turns(event: IrcEvent, channel: str) -> list[Turn]:
    """The turns a channel event adds to that channel's context (Relay's trained phrasing)."""
    match event:
        case Message(origin=origin, text=text):
            # A line with nothing left once cleaned (only spaces or formatting) is Relay's
            # silence marker, not an empty turn.
            return [Turn(origin.nick, safe_line(text) or EMPTY_MESSAGE)]
        case Action(origin=origin, text=text):
            return [Turn(SYSTEM, f"* {origin.nick} {safe_line(text)}".rstrip())]
        case Join(origin=origin):
            return [Turn(SYSTEM, f"* {origin.nick} has joined {channel}")]
        case Part(origin=origin, reason=reason):
            suffix = f" ({safe_line(reason)})" if safe_line(reason) else ""
            return [Turn(SYSTEM, f"* {origin.nick} has left {channel}{suffix}")]
        case Quit(origin=origin, reason=reason):
            suffix = f" ({safe_line(reason)})" if safe_line(reason) else ""
            return [Turn(SYSTEM, f"* {origin.nick} has quit{suffix}")]
        case NickChange(origin=origin, new_nick=new_nick):
            return [Turn(SYSTEM, f"* {origin.nick} is now known as {new_nick}")]
        case Topic(origin=origin, text=text) if origin is not None:
            topic = safe_line(text)
            return [Turn(origin.nick, f"/topic {topic}"), topic_line(channel, topic)]
        case Kick(origin=origin, target=target, reason=reason):
            suffix = f" ({safe_line(reason)})" if safe_line(reason) else ""
            return [Turn(SYSTEM, f"* {target} was kicked by {origin.nick}{suffix}")]
    return []


@dataclass(slots=True)
class Transcript:
    """One conversation's context. Mutated only on the reactor thread."""

    name: str  # channel as the server spells it, or the peer's nick for a query
    count_tokens: TokenCounter
    budget: int  # tokens available for header + turns + the generation prefix
    turn_overhead: int = 3
    max_turns: int = 500
    # Share of the rolling turns dropped at once when over budget (at least what is needed).
    trim_fraction: float = 0.25
    header: list[Turn] = field(default_factory=list)
    topic: Turn | None = None
    _turns: deque[tuple[Turn, int]] = field(default_factory=deque)
    _header_tokens: int = 0
    _turn_tokens: int = 0
    revision: int = 0  # bumped on every change, so a saver knows what is dirty

    def _cost(self, turn: Turn) -> int:
        return self.count_tokens(f"{turn.role}\n{turn.content}") + self.turn_overhead

    def set_header(self, turns: Sequence[Turn]) -> None:
        self.header = list(turns)
        self._recount_header()

    def set_topic(self, topic: str) -> None:
        self.topic = topic_line(self.name, safe_line(topic))
        self._recount_header()

    def _recount_header(self) -> None:
        self.revision += 1
        fixed = [*self.header, *([self.topic] if self.topic else [])]
        self._header_tokens = sum(self._cost(turn) for turn in fixed)

    def add(self, turns: Sequence[Turn]) -> None:
        for turn in turns:
            cost = self._cost(turn)
            self._turns.append((turn, cost))
            self._turn_tokens += cost
        self.revision += 1
        self._trim(reserve=0)

    def retract(self, turn: Turn) -> bool:
        """Remove this very turn (the newest entry that is it): a line the server never
        confirmed. False when it is gone already (trimmed or cleared)."""
        for index in range(len(self._turns) - 1, -1, -1):
            if self._turns[index][0] is turn:
                _, cost = self._turns[index]
                del self._turns[index]
                self._turn_tokens -= cost
                self.revision += 1
                return True
        return False

    def replace(self, old: Turn, new: Turn) -> bool:
        """Put `new` where this very turn `old` is (an answer growing as its lines are
        delivered). False when `old` is gone (trimmed or cleared)."""
        for index in range(len(self._turns) - 1, -1, -1):
            if self._turns[index][0] is old:
                cost = self._cost(new)
                self._turn_tokens += cost - self._turns[index][1]
                self._turns[index] = (new, cost)
                self.revision += 1
                self._trim(reserve=0)
                return True
        return False

    def is_last(self, turn: Turn) -> bool:
        """Whether this very turn is the newest one (nothing was said after it)."""
        return bool(self._turns) and self._turns[-1][0] is turn

    def clear(self) -> None:
        self._turns.clear()
        self._turn_tokens = 0
        self.revision += 1

    def drop_trailing(self, is_droppable: Callable[[Turn], bool]) -> list[Turn]:
        """Remove turns from the end while they match (e.g. the bot's last reply)."""
        dropped = []
        while self._turns and is_droppable(self._turns[-1][0]):
            turn, cost = self._turns.pop()
            self._turn_tokens -= cost
            dropped.append(turn)
        if dropped:
            self.revision += 1
        return dropped[::-1]

    def _over(self, limit: int) -> bool:
        return bool(self._turns) and (
            self._header_tokens + self._turn_tokens > limit or len(self._turns) > self.max_turns
        )

    def _trim(self, reserve: int) -> None:
        limit = self.budget - reserve
        if not self._over(limit):
            return
        # Dropping one turn per message would change the prompt's start every time; a chunk
        # keeps it stable until the slack it leaves is used up.
        chunk = int(len(self._turns) * max(0.0, min(1.0, self.trim_fraction)))
        dropped = 0
        while self._turns and (dropped < chunk or self._over(limit)):
            _, cost = self._turns.popleft()
            self._turn_tokens -= cost
            dropped += 1
        self.revision += 1

    def turns_for(self, speaker: str, extra_reserve: int = 0) -> list[Turn]:
        """Header and as many recent turns as fit with `speaker`'s generation prefix (and
        `extra_reserve` more tokens, for a reply longer than the budget assumed)."""
        self._trim(reserve=self.count_tokens(f"{speaker}\n") + 1 + max(0, extra_reserve))
        fixed = [*self.header, *([self.topic] if self.topic else [])]
        return fixed + [turn for turn, _ in self._turns]

    @property
    def turns(self) -> list[Turn]:
        return [turn for turn, _ in self._turns]

    @property
    def token_count(self) -> int:
        return self._header_tokens + self._turn_tokens
