"""Channel QA: answering a question from a channel's recent log, with the lines it came from.

Airoboros and bagel were trained on "closed-context" prompts: input blocks, each with
metadata between BEGINCONTEXT and ENDCONTEXT, then the question inside BEGININSTRUCTION …
ENDINSTRUCTION; they answer and then cite the metadata of the blocks they used ("Source:").
Here each log line is one block whose metadata is its line number and nick, so a citation
names lines. This module is pure: it builds the request text, fits the log to a token budget,
and reads the answer and its citations back; `relaybot.bridge.asking` runs the jobs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relaybot.conversation.formats import Turn
from relaybot.conversation.two_role import SYSTEM_ROLE, neutralize

QA_SYSTEM = (
    "You answer questions about an IRC channel using only its log, given as input blocks. "
    "Each block's context names its line number and the nick who wrote it."
)
MAX_LINES = 200
# Tokens kept free for the instruction's wrapping and the format's markup.
_MARGIN = 48


@dataclass(frozen=True, slots=True)
class LogLine:
    number: int  # 1 = the oldest line shown to the model
    nick: str | None  # None for announcements and actions (`* …`)
    text: str

    def shown(self) -> str:
        return f"<{self.nick}> {self.text}" if self.nick else self.text


@dataclass(frozen=True, slots=True)
class QaAnswer:
    answer: str
    cited: tuple[int, ...]  # line numbers that exist in the log the model was shown


def log_lines(turns: Sequence[Turn]) -> list[LogLine]:
    """The rolling context as numbered log lines; command turns (`/join`, `/whois`) are left
    out because the announcement that follows each says the same thing."""
    lines: list[LogLine] = []
    for turn in turns:
        content = turn.content.strip()
        if not content or (turn.role != SYSTEM_ROLE and content.startswith("/")):
            continue
        nick = None if turn.role == SYSTEM_ROLE else turn.role
        # An answer of several lines is one turn; the log shows its lines as IRC did.
        for line in content.split("\n"):
            if line.strip():
                lines.append(LogLine(len(lines) + 1, nick, line.strip()))
    return lines


def input_block(line: LogLine, channel: str) -> str:
    meta = [f"channel: {neutralize(channel)}", f"line: {line.number}"]
    if line.nick:
        meta.append(f"nick: {neutralize(line.nick)}")
    return "\n".join(
        ["BEGININPUT", "BEGINCONTEXT", *meta, "ENDCONTEXT", neutralize(line.text), "ENDINPUT"]
    )


def instruction_block(question: str) -> str:
    return "\n".join(
        [
            "BEGININSTRUCTION",
            neutralize(question),
            "Answer in one or two short sentences, then cite the lines you used as "
            "\"Source: line N\". Don't make up answers if you don't know.",
            "ENDINSTRUCTION",
        ]
    )


def fit_lines(
    lines: Sequence[LogLine], channel: str, count_tokens: Callable[[str], int], budget: int
) -> list[LogLine]:
    """The newest lines whose blocks fit in `budget` tokens (numbers are kept, so a line is
    cited by the same number whatever was cut)."""
    chosen: list[LogLine] = []
    used = 0
    for line in reversed(lines[-MAX_LINES:]):
        cost = count_tokens(input_block(line, channel)) + 1
        if used + cost > budget:
            break
        chosen.append(line)
        used += cost
    chosen.reverse()
    return chosen


def qa_request(lines: Sequence[LogLine], channel: str, question: str) -> str:
    blocks = [input_block(line, channel) for line in lines]
    return "\n".join([*blocks, instruction_block(question)])


def request_budget(
    context_window: int, max_new_tokens: int, question: str, count_tokens: Callable[[str], int]
) -> int:
    """Tokens left for the log blocks once the system prompt, instruction and reply fit."""
    fixed = count_tokens(QA_SYSTEM) + count_tokens(instruction_block(question))
    return context_window - max_new_tokens - fixed - _MARGIN


_SOURCE = re.compile(r"\bsources?\s*:", re.IGNORECASE)
_LINE_REF = re.compile(r"\blines?\s*(?:number\s*)?[:#]?\s*(\d+(?:\s*(?:,|and|&|-)\s*\d+)*)", re.I)
_NUMBER = re.compile(r"\d+")


def parse_answer(text: str, known: Sequence[int]) -> QaAnswer:
    """The answer before any `Source:` part, and every cited line number that exists."""
    match = _SOURCE.search(text)
    answer = text[: match.start()] if match else text
    cited: list[int] = []
    valid = set(known)
    for reference in _LINE_REF.finditer(text):
        for number in _NUMBER.findall(reference.group(1)):
            value = int(number)
            if value in valid and value not in cited:
                cited.append(value)
    answer = " ".join(answer.split())
    # A citation written inline ("… (line 3)") stays in the answer; a dangling "Source" does not.
    return QaAnswer(answer.rstrip(" -:") or "(no answer)", tuple(cited))


def reply_text(asker: str, answer: QaAnswer, lines: Sequence[LogLine]) -> str:
    """What the bot says: the answer addressed to the asker, and the lines it cites."""
    by_number = {line.number: line for line in lines}
    if not answer.cited:
        return f"{asker}: {answer.answer} [no line cited]"
    sources = []
    for number in answer.cited:
        line = by_number[number]
        who = f"<{line.nick}>" if line.nick else "*"
        sources.append(f"line {number} {who}")
    return f"{asker}: {answer.answer} [from {', '.join(sources)}]"
