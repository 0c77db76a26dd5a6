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


class ScriptedEngine:
    """Answers with the given replies in turn, one a request (an exception in the script is
    raised instead), and keeps every request."""

    description = "scripted"

    def __init__(self, *replies: str | BaseException, context_window: int = 2048) -> None:
        self.replies = list(replies)
        self.context_window = context_window
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.requests.extend(requests)
        answers = []
        for _ in requests:
            reply = self.replies.pop(0)
            if isinstance(reply, BaseException):
                raise reply
            answers.append(reply)
        return answers
