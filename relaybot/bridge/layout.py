"""An answer laid out as IRC lines: the model's text cleaned into pieces (its lines, text or
/me), wrapped into lines of at most a byte budget, and, when it does not all fit in the line
cap or the model was cut off by its token limit, ended at the last sentence or clause boundary
that fits, with a `(more)` marker, keeping what was not sent for `more`.

Pure: no I/O, no clocks. `relaybot.bridge.replies` sends the lines; `relaybot.bridge.offers`
keeps what is left.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from relaybot.conversation.formats import strip_echoed_speaker
from relaybot.irc.text import safe_line, split_utf8
from relaybot.log import get_logger

log = get_logger(component="replies")

# Sent after the last line of an answer that has more to say; never recorded in the context.
MORE_MARKER = " … (more)"

# Boundary strengths: where an answer may end when it has to be cut.
SENTENCE = 3
CLAUSE = 2
WORD = 1

# A sentence ends after . ! ? or … (and any closing quotes or brackets) before a space; a
# clause after , ; : or a closing bracket, or before a dash that stands between spaces.
_CLOSING = r"[\"'\u201d\u2019)\]]*"  # closing quotes and brackets
_SENTENCE_END = re.compile(rf"[.!?\u2026]+{_CLOSING}(?=\s)")
_CLAUSE_END = re.compile(rf"(?:[,;:]+{_CLOSING}|[)\]])(?=\s)|(?<=\S)(?=\s+[-\u2013\u2014]\s)")
_FINAL_SENTENCE_END = re.compile(rf"[.!?\u2026]+{_CLOSING}$")

# The last sentence end that fits is taken when it keeps at least this share of the longest
# start that fits, else the last clause end that does; failing both, any sentence or clause
# end; the last word only when there is none. A short first sentence then does not leave
# most of the lines unused when a later clause would fill them.
_KEEP_AT_LEAST = 1 / 3


@dataclass(frozen=True, slots=True)
class OutLine:
    text: str
    action: bool  # sent as a /me
    # How the line joins the one before it in the answer's recorded turn: "\n" starts a new
    # line of the model's text, " " continues one that was wrapped (or cut) to fit.
    joiner: str = "\n"
    marker: str = ""  # sent after the text and never recorded: the `more` marker

    @property
    def sent(self) -> str:
        return self.text + self.marker


@dataclass(frozen=True, slots=True)
class Piece:
    """One line of the model's text, cleaned: what wraps into one or more IRC lines."""

    text: str
    action: bool
    joiner: str = "\n"  # " " when it continues a piece that was cut


@dataclass(frozen=True, slots=True)
class Layout:
    lines: tuple[OutLine, ...]  # what to send now; the last carries the marker when `more`
    rest: tuple[Piece, ...]  # generated but not sent
    more: bool  # the answer has more: unsent text, or a model that was cut off
    strength: int  # the boundary it ends at (SENTENCE, CLAUSE, WORD; 0: a hard cut or none)


def pieces(
    text: str, *, speaker: str, actions: bool, log_context: Mapping[str, Any]
) -> list[Piece]:
    """Model text as pieces: an echoed `<speaker>` prefix dropped, `/me` lines made actions
    (or dropped where `actions` is off), lines imitating any other IRC command dropped."""
    out: list[Piece] = []
    for raw in strip_echoed_speaker(text, speaker).splitlines():
        line = safe_line(raw)
        if not line:
            continue
        if line.startswith("/me ") and actions:
            action = line[len("/me ") :].strip()
            if action:
                out.append(Piece(action, True))
        elif line.startswith("/"):
            # The model imitating an IRC command: never sent as one, and not as text either.
            log.info("reply_line_dropped_command", line=line[:80], **log_context)
        else:
            out.append(Piece(line, False))
    return out


def wrap(parts: Sequence[Piece], budget: int) -> list[OutLine]:
    """Each piece as lines of at most `budget` bytes, broken at spaces where possible."""
    lines: list[OutLine] = []
    for piece in parts:
        remaining = piece.text
        joiner = piece.joiner
        for chunk in split_utf8(piece.text, budget):
            if chunk:
                lines.append(OutLine(chunk, piece.action, joiner))
            remaining = remaining[remaining.find(chunk) + len(chunk) :] if chunk else remaining
            # A chunk that ended at a space continues after it; one cut inside a word, not.
            joiner = " " if remaining[:1].isspace() else ""
    return lines


def _fits(parts: Sequence[Piece], budget: int, max_lines: int, marker: str) -> bool:
    lines = wrap(parts, budget)
    if not lines or len(lines) > max_lines:
        return False
    return len((lines[-1].text + marker).encode()) <= budget


def _boundaries(parts: Sequence[Piece], cut_off: bool) -> list[tuple[int, int, int]]:
    """Where the answer may end, in order: (piece, offset in its text, strength)."""
    found: list[tuple[int, int, int]] = []
    for index, piece in enumerate(parts):
        text = piece.text
        strengths: dict[int, int] = {}
        for match in re.finditer(r"\s+", text):
            strengths[match.start()] = WORD
        for match in _CLAUSE_END.finditer(text):
            strengths[match.end()] = max(strengths.get(match.end(), 0), CLAUSE)
        for match in _SENTENCE_END.finditer(text):
            strengths[match.end()] = SENTENCE
        last = index == len(parts) - 1
        if not (last and cut_off):
            strengths[len(text)] = SENTENCE  # the end of one of the model's lines
        elif _FINAL_SENTENCE_END.search(text):
            strengths[len(text)] = SENTENCE  # cut off right after a full stop
        found += [(index, offset, strengths[offset]) for offset in sorted(strengths) if offset]
    return found


def _split(parts: Sequence[Piece], index: int, offset: int) -> tuple[list[Piece], list[Piece]]:
    """The pieces up to (piece `index`, `offset`), and the rest after it."""
    piece = parts[index]
    head = piece.text[:offset].rstrip()
    tail = piece.text[offset:].strip()
    sent = [*parts[:index], *([replace(piece, text=head)] if head else [])]
    rest = [*([replace(piece, text=tail, joiner=" ")] if tail else []), *parts[index + 1 :]]
    return sent, rest


def lay_out(
    parts: Sequence[Piece], *, budget: int, max_lines: int, cut_off: bool = False
) -> Layout:
    """The lines to send now for `parts`. Everything when it fits and the model finished;
    otherwise the longest start that fits with the marker and ends at a sentence or clause
    boundary where there is one (see _KEEP_AT_LEAST), the rest kept."""
    if not parts:
        return Layout((), (), False, 0)
    everything = wrap(parts, budget)
    if not cut_off and len(everything) <= max_lines:
        return Layout(tuple(everything), (), False, SENTENCE)
    candidates = _boundaries(parts, cut_off)
    # Longer starts need more lines, so the candidates that fit are about a prefix of the
    # list: binary search for its end, then check each candidate taken (the marker on the
    # last line makes fitting not quite monotonic).
    low, high = 0, len(candidates)
    while low < high:
        middle = (low + high) // 2
        if _fits_at(parts, candidates[middle], budget, max_lines):
            low = middle + 1
        else:
            high = middle
    fitting = [c for c in reversed(candidates[:low])]
    if not fitting:
        return _hard_cut(parts, budget, max_lines)
    positions = _positions(parts)
    furthest = positions[fitting[0][0]] + fitting[0][1]
    preferences = [(SENTENCE, _KEEP_AT_LEAST), (CLAUSE, _KEEP_AT_LEAST), (SENTENCE, 0), (CLAUSE, 0)]
    for strength, share in [*preferences, (WORD, 0)]:
        for candidate in fitting:
            index, offset, found = candidate
            if positions[index] + offset < share * furthest:
                break
            if found >= strength and _fits_at(parts, candidate, budget, max_lines):
                sent, rest = _split(parts, index, offset)
                return _with_marker(sent, rest, budget, found)
    return _hard_cut(parts, budget, max_lines)


def _fits_at(
    parts: Sequence[Piece], candidate: tuple[int, int, int], budget: int, max_lines: int
) -> bool:
    return _fits(_split(parts, candidate[0], candidate[1])[0], budget, max_lines, MORE_MARKER)


def _positions(parts: Sequence[Piece]) -> list[int]:
    starts, total = [], 0
    for piece in parts:
        starts.append(total)
        total += len(piece.text) + 1
    return starts


def _with_marker(sent: list[Piece], rest: list[Piece], budget: int, strength: int) -> Layout:
    lines = wrap(sent, budget)
    lines[-1] = replace(lines[-1], marker=MORE_MARKER)
    return Layout(tuple(lines), tuple(rest), True, strength)


def _hard_cut(parts: Sequence[Piece], budget: int, max_lines: int) -> Layout:
    """No boundary fits (a very long word): the longest start that fits, cut anywhere."""
    cuts = [(index, offset) for index, piece in enumerate(parts)
            for offset in range(1, len(piece.text) + 1)]  # fmt: skip
    low, high = 0, len(cuts)
    while low < high:
        middle = (low + high) // 2
        if _fits_at(parts, (*cuts[middle], 0), budget, max_lines):
            low = middle + 1
        else:
            high = middle
    # The search assumes longer starts never fit better; check, stepping back if not.
    for index, offset in reversed(cuts[:low]):
        if _fits_at(parts, (index, offset, 0), budget, max_lines):
            sent, rest = _split(parts, index, offset)
            text = parts[index].text
            inside_word = 0 < offset < len(text) and not (
                text[offset - 1].isspace() or text[offset].isspace()
            )
            if rest and inside_word:
                rest[0] = replace(rest[0], joiner="")
            return _with_marker(sent, rest, budget, 0)
    return Layout((), tuple(parts), True, 0)
