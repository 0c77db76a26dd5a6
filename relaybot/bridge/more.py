"""`more`: what an answer still has to say, and how someone asks for it.

An answer that was cut (by the line cap, or by the token limit while the model was still
writing) leaves an Offer in its conversation: the text generated but not sent, and whether the
model can be resumed. `more` from the person it answered sends the next part; once the
generated text is used up, generation resumes from the answer as written so far, so the rest
is generated only when asked. The continuation is recorded in the same answer turn. Any other
message in the conversation ends the offer.

Pure: the relay sends and schedules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from relaybot.bridge.layout import Piece
from relaybot.bridge.speaking import Answer
from relaybot.conversation.formats import Prompt, Segment
from relaybot.inference.engine import SamplingParams
from relaybot.irc.text import casefold, strip_formatting

# What follows the bot's nick (or stands alone in a query) to ask for more.
_MORE = r"more(?:\s+(?P<private>pm|privately|in private))?[.!?]*"

# Where a `more` wants the next part: the conversation, or the asker by private message.
MoreWhere = Literal["here", "private"]
# Characters a continuation may start with that join the text before it without a space.
_JOINS_WITHOUT_SPACE = set(",.;:!?)]}'%\u2019\u201d\u2026")


@dataclass(slots=True)
class Offer:
    asker: str  # the nick it answered, as written when asked
    folded_asker: str
    speaker: str  # the role the model writes as
    answer: Answer  # where its lines are recorded
    params: SamplingParams
    model: str | None  # the served model that wrote it: the one that goes on with it
    text: str  # everything generated for it so far, as output moderation let it out
    rest: tuple[Piece, ...]  # generated, not sent
    resumable: bool  # the model was cut off: generation can go on from `text`
    resuming: int | None = None  # the job generating its continuation, while it runs
    # What `text` and `rest` become when that job's text comes back (see resume_point).
    resume_from: tuple[str, tuple[Piece, ...]] | None = None
    deliver_to: str | None = None  # the nick its continuation goes to privately, if asked so

    def abandon_resume(self) -> None:
        """The continuation job failed or was dropped: `more` may be asked again."""
        self.resuming = None
        self.resume_from = None
        self.deliver_to = None


def more_request(text: str, bot_nick: str, casemapping: str, *, query: bool) -> MoreWhere | None:
    """`botnick: more` (or `botnick, more` / `botnick more`), in a private query also a plain
    `more`: where the next part should go. `... more pm` (or `privately`, `in private`) in a
    channel asks for it by private message."""
    folded = casefold(strip_formatting(text), casemapping).strip()
    nick = re.escape(casefold(bot_nick, casemapping))
    match = re.fullmatch(rf"{nick}\s*[:,]?\s+{_MORE}", folded)
    if match is None and query:
        match = re.fullmatch(_MORE, folded)
    if match is None:
        return None
    return "private" if match.group("private") and not query else "here"


def resume_point(text: str, rest: tuple[Piece, ...]) -> tuple[str, tuple[Piece, ...]]:
    """Where generation goes on: `text` without the last word of the unsent rest, which the
    token limit may have cut short (the model writes it again), and the rest without it.
    Nothing is dropped unless `text` ends with that very word (the rest is cleaned text)."""
    stripped = text.rstrip()
    if not rest or rest[-1].action:
        return stripped, rest
    last = rest[-1].text
    if not last or not last[-1].isalnum():
        return stripped, rest
    space = last.rfind(" ")
    word = last[space + 1 :]
    if not stripped.endswith(word) or len(stripped) == len(word):
        return stripped, rest
    base = stripped[: -len(word)].rstrip()
    kept = last[:space].rstrip() if space >= 0 else ""
    pieces = [*rest[:-1], *([replace(rest[-1], text=kept)] if kept else [])]
    return base, tuple(pieces)


def resumed_prompt(prompt: Prompt, text: str) -> Prompt:
    """The prompt that continues the bot's open turn after `text`: the same prompt with the
    answer so far written into the turn, so an engine's cached prefix covers nearly all."""
    return Prompt((*prompt.segments, Segment(text)), prompt.stop)


def joiner(text: str, continuation: str) -> str:
    """What goes between an answer so far and its continuation (engines strip both)."""
    if not text or not continuation or continuation[0] in _JOINS_WITHOUT_SPACE:
        return ""
    return " "


def continued(rest: tuple[Piece, ...], more: list[Piece], join: str) -> tuple[Piece, ...]:
    """The unsent rest with a continuation's pieces after it: its first piece goes on the
    rest's last line (or after what was sent, when nothing is left)."""
    if not more:
        return rest
    first = replace(more[0], joiner=join or "")
    if rest and not rest[-1].action and not first.action:
        last = rest[-1]
        return (*rest[:-1], replace(last, text=last.text + join + first.text), *more[1:])
    return (*rest, first, *more[1:])
