"""What the inference worker reports as it works, for metrics: the `WorkerObserver` seam it
takes, and the no-op default. One worker serves every network, so each report names the
network of the job it is about (the first part of the job's key).

Calls come on the inference thread: an observer must be quick and must not touch bot state.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TokenCounts(Protocol):
    """What one request cost, as an engine that counts tokens reports it (the local engine's
    `last_stats`; remote engines report nothing)."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens whose KV state came from the prefix cache, not computed again."""
        ...

    @property
    def generated_tokens(self) -> int: ...

    @property
    def first_token_at(self) -> float | None:
        """When the engine chose the request's first token (time.monotonic), if it knows."""
        ...


class WorkerObserver(Protocol):
    def started(self, network: str, waited: float) -> None:
        """A job that answers a request began generating, `waited` seconds after the line
        that asked for it (jobs no line asked for, such as `ask`, are not reported)."""
        ...

    def generated(self, network: str, counts: TokenCounts) -> None:
        """A job finished, and the engine counted its tokens."""
        ...

    def first_token(self, network: str, seconds: float) -> None:
        """A job that answers a request had its first token chosen `seconds` after the line
        that asked for it."""
        ...

    def batch(self, jobs: int) -> None:
        """An engine batch ended, having generated `jobs` jobs: those it started with and
        those that joined it between decode steps. Batches mix networks."""
        ...


class NoWorkerObserver:
    """The default: nothing is observed."""

    def started(self, network: str, waited: float) -> None:
        pass

    def generated(self, network: str, counts: TokenCounts) -> None:
        pass

    def first_token(self, network: str, seconds: float) -> None:
        pass

    def batch(self, jobs: int) -> None:
        pass
