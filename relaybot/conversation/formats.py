"""Prompt formats: how a list of turns becomes model input.

A prompt is a sequence of segments. Markup segments (`special=True`) are the format's own
structure tokens; text segments come from people and are tokenised with special-token
parsing switched off, so `<|im_end|>` typed into a channel stays plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# Relay's silence marker: what the reference client writes for an empty chat line. Sources
# put it in (the terminal chat, IRC, an empty reply); the format writes a turn as it is.
EMPTY_MESSAGE = "..."


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    special: bool = False


@dataclass(frozen=True, slots=True)
class Prompt:
    segments: tuple[Segment, ...]
    stop: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)


class PromptFormat(Protocol):
    name: str

    def render(self, turns: Sequence[Turn], speaker: str) -> Prompt:
        """The prompt that asks the model to write `speaker`'s next turn."""
        ...

    def turn_overhead(self) -> int:
        """Structure tokens one turn adds on top of its role and content."""
        ...


class RelayFormat:
    """Relay's ChatML dialect: IRC nicks are roles, `system` carries `* ` announcements."""

    name = "relay"
    im_start = "<|im_start|>"
    im_end = "<|im_end|>"

    def _turn(self, turn: Turn) -> Iterable[Segment]:
        # Exactly as the reference client's ChatML chat template: an empty turn stays empty
        # (`<|im_start|>anon\n<|im_end|>`), whitespace is kept.
        yield Segment(self.im_start, special=True)
        yield Segment(f"{turn.role}\n{turn.content}")
        yield Segment(self.im_end, special=True)
        yield Segment("\n")

    def render(self, turns: Sequence[Turn], speaker: str) -> Prompt:
        segments: list[Segment] = []
        for turn in turns:
            segments.extend(self._turn(turn))
        segments.append(Segment(self.im_start, special=True))
        segments.append(Segment(f"{speaker}\n"))
        return Prompt(tuple(segments), stop=(self.im_end, self.im_start))

    def turn_overhead(self) -> int:
        return 3


class WithStops:
    """A format with extra stop strings (a preset's or `model.stop`) on every prompt."""

    def __init__(self, inner: PromptFormat, stops: Sequence[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.stops = tuple(stop for stop in stops if stop)

    def render(self, turns: Sequence[Turn], speaker: str) -> Prompt:
        prompt = self.inner.render(turns, speaker)
        extra = tuple(stop for stop in self.stops if stop not in prompt.stop)
        return Prompt(prompt.segments, prompt.stop + extra)

    def turn_overhead(self) -> int:
        return self.inner.turn_overhead()


def with_stops(fmt: PromptFormat, stops: Sequence[str]) -> PromptFormat:
    return WithStops(fmt, stops) if stops else fmt


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop sequence (formats whose stops are plain text, such as
    `USER:` or a new transcript line, cannot stop on token ids alone)."""
    cut = len(text)
    for stop in stops:
        if stop:
            found = text.find(stop)
            if found >= 0:
                cut = min(cut, found)
    return text[:cut]


def strip_echoed_speaker(text: str, speaker: str) -> str:
    """The text without a leading `<speaker>`: two-role formats show the channel as
    `<nick> text` lines, and the model may copy that for its own line."""
    stripped = text.lstrip()
    prefix = f"<{speaker}>"
    return stripped[len(prefix) :] if stripped.startswith(prefix) else text
