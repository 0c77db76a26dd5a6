"""The Engine seam: something that turns prompts into completions, one batch at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from relaybot.config.schema import ModelConfig
from relaybot.conversation.formats import Prompt
from relaybot.conversation.identity import ContextKey


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
    # The conversation this prompt continues, e.g. (network, casefolded channel). An engine that
    # keeps per-conversation state (a KV-cache prefix) reuses it for the next prompt with the
    # same key; None keeps nothing.
    cache_key: ContextKey | None = None
    # The served model to ask for, by name, where a server serves several (the OpenAI-compatible
    # engine; inference.served says which names may be chosen); None: the configured one.
    # Engines that serve one model ignore it.
    model: str | None = None


class EngineError(RuntimeError):
    """Generation failed for this batch; the bot drops the replies and keeps running."""


class Engine(Protocol):
    description: str
    context_window: int

    def count_tokens(self, text: str) -> int: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One completion per request, stop sequences removed."""
        ...


class Done(Protocol):
    """A request's text is ready. `cut`: it stopped at `max_new_tokens`, before the model
    ended its turn (engines that cannot tell report False)."""

    def __call__(self, index: int, text: str, cut: bool = False) -> None: ...


class CompletesEach(Protocol):
    """Optional for engines: report each completion as soon as it is ready."""

    def generate_each(self, requests: Sequence[GenerationRequest], done: Done) -> None:
        """Like `generate`, but calls `done(index, text, cut)` for each request as its text is
        ready, in any order. Raises EngineError on failure; requests not reported by then
        have no text."""
        ...


class BatchFeed(Protocol):
    """Where a running batch gets more work: the worker's queue, seen from the engine."""

    def admit(self, free: int, params: SamplingParams) -> Sequence[GenerationRequest]:
        """Up to `free` waiting requests that decode with `params`, without blocking; they
        join the running batch."""
        ...

    def dropped(self, index: int) -> bool:
        """True when request `index` was cancelled and its row should stop now."""
        ...


class BatchesContinuously(Protocol):
    """Optional for engines: requests join a batch that is already decoding."""

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Done,
        feed: BatchFeed | None,
        *,
        max_rows: int = 8,
    ) -> None:
        """`generate_each`, plus requests from `feed` between decode steps (numbered on from
        `len(requests)` in the order admitted) while the batch has fewer than `max_rows`
        rows. Dropped requests are not reported."""
        ...


class ForgetsConversations(Protocol):
    """Optional for engines: drop what is kept for a conversation (its context was reset or
    the bot left). Safe to call from any thread."""

    def forget(self, key: ContextKey) -> None: ...


class ReportsDegradation(Protocol):
    """Optional for engines: a reason when the engine runs without a capability it should
    have (the fast decode path), '' when it runs as designed. Shown in `!relay status` and
    the systemd STATUS, not only logged."""

    @property
    def degraded(self) -> str: ...


def degradation(engine: object) -> str:
    """The engine's `degraded` reason, '' for engines that do not report one."""
    reason = getattr(engine, "degraded", "")
    return reason if isinstance(reason, str) else ""


def sampling_from(config: ModelConfig) -> SamplingParams:
    """The configured sampling settings, as the engine takes them."""
    return SamplingParams(
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        min_p=config.min_p,
        repetition_penalty=config.repetition_penalty,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
    )
