"""Deterministic stand-ins for the model, for tests about everything but generation."""

from __future__ import annotations

from collections.abc import Sequence

from relaybot.inference.engine import GenerationRequest


class FixedEngine:
    """Answers every request with the same text and remembers the prompts it was given."""

    description = "fixed"
    context_window = 2048

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.prompts: list[str] = []

    @property
    def requests(self) -> int:
        return len(self.prompts)

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.prompts.extend(request.prompt.text for request in requests)
        return [self.text for _ in requests]
