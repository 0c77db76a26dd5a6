"""The Engine seam: something that turns prompts into completions, one batch at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from relaybot.formats import Prompt


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Relay's reference-client defaults."""

    temperature: float = 0.3
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.1
    max_new_tokens: int = 128
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: Prompt
    params: SamplingParams


class EngineError(RuntimeError):
    """Generation failed for this batch; the bot drops the replies and keeps running."""


class Engine(Protocol):
    description: str
    context_window: int

    def count_tokens(self, text: str) -> int: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One completion per request, stop sequences removed."""
        ...
