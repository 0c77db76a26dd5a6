"""The moderation contract and the chain that runs hooks: verdicts, the per-line context, the
Moderator protocol, and ModerationChain, which calls each hook on a worker thread under a
timeout and fails closed when a hook raises, hangs or answers nonsense."""

from __future__ import annotations

import enum
import functools
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from relaybot.log import get_logger

log = get_logger(component="moderation")

Direction = Literal["input", "output"]

# Log at most this much of a moderated line: enough to recognise it, not enough to relay it.
EXCERPT_CHARS = 80
# A hook whose calls keep timing out gets no new threads once this many are still stuck in it:
# its later calls fail closed at once instead of piling up threads (and concurrent calls into
# a hook that is already misbehaving).
MAX_STUCK_CALLS = 3


class Decision(enum.StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A hook's answer. `text` is the replacement for REPLACE; `hook` is filled by the chain."""

    decision: Decision
    text: str = ""
    reason: str = ""
    hook: str = ""

    def __post_init__(self) -> None:
        # Hooks may be third-party code: a wrong type here should fail at the hook, loudly.
        object.__setattr__(self, "decision", Decision(self.decision))
        for name in ("text", "reason", "hook"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Verdict.{name} must be a string")

    @classmethod
    def allow(cls) -> Verdict:
        return cls(Decision.ALLOW)

    @classmethod
    def block(cls, reason: str) -> Verdict:
        return cls(Decision.BLOCK, reason=reason)

    @classmethod
    def replace(cls, text: str, reason: str = "") -> Verdict:
        return cls(Decision.REPLACE, text=text, reason=reason)

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @property
    def blocked(self) -> bool:
        return self.decision is Decision.BLOCK

    @property
    def replaced(self) -> bool:
        return self.decision is Decision.REPLACE


@dataclass(frozen=True, slots=True)
class ModerationContext:
    network: str
    target: str  # the channel, or the peer's nick in a private query
    nick: str  # who spoke (input) or the bot itself (output)
    private: bool
    members: frozenset[str] = frozenset()  # casefolded nicks in the channel
    casemapping: str = "rfc1459"


@runtime_checkable
class Moderator(Protocol):
    name: str

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        """A line someone sent, before it enters the model's context or triggers a reply."""
        ...

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        """The model's reply text, before it is sent."""
        ...


class ModeratorOptionError(ValueError):
    """A bad moderator option; `key` is relative to the hook's table (`patterns[1]`), so the
    loader can report the full config path."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(error: BaseException) -> str:
    message = str(error)
    return f"{type(error).__name__}: {excerpt(message, 200)}" if message else type(error).__name__


_Job = tuple[Callable[[], Any], "Future[Any]"]


class _Worker:
    """One daemon thread running calls in order. Daemon, so that a hook stuck forever cannot
    hold up interpreter exit the way a ThreadPoolExecutor thread would."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relaybot-moderation", daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((call, future))
        return future

    def stop(self) -> None:
        """Exit once the current call (if any) returns."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as error:  # the hook's problem: reported, never raised here
                future.set_exception(error)
            else:
                future.set_result(result)


class ModerationChain:
    """Runs hooks in order. A replace hands its text to the next hook; the first block ends
    the chain; a hook that raises, returns something other than a Verdict, or runs past
    `timeout` seconds counts as a block. Meant to be called from one thread."""

    def __init__(self, moderators: Sequence[Moderator], *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._moderators = tuple(moderators)
        self._names = _unique_names(self._moderators)
        self._worker: _Worker | None = None
        self._stuck = [0] * len(self._moderators)
        self._stuck_lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        return self._run("input", text, context)

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        return self._run("output", text, context)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _run(self, direction: Direction, text: str, context: ModerationContext) -> Verdict:
        current = text
        replaced_by: list[str] = []
        reasons: list[str] = []
        for index, name in enumerate(self._names):
            verdict = self._call(index, direction, current, context)
            if verdict.decision is Decision.BLOCK:
                reason = verdict.reason or "blocked"
                log.warning(
                    "moderation_blocked",
                    hook=name,
                    reason=reason,
                    direction=direction,
                    network=context.network,
                    target=context.target,
                    nick=context.nick,
                    excerpt=excerpt(current),
                )
                return Verdict(Decision.BLOCK, reason=reason, hook=name)
            if verdict.decision is Decision.REPLACE and verdict.text != current:
                log.info(
                    "moderation_replaced",
                    hook=name,
                    reason=verdict.reason,
                    direction=direction,
                    network=context.network,
                    target=context.target,
                    nick=context.nick,
                )
                current = verdict.text
                replaced_by.append(name)
                if verdict.reason:
                    reasons.append(verdict.reason)
        if not replaced_by:
            return Verdict.allow()
        return Verdict(
            Decision.REPLACE, text=current, reason="; ".join(reasons), hook=",".join(replaced_by)
        )

    def _call(
        self, index: int, direction: Direction, text: str, context: ModerationContext
    ) -> Verdict:
        """One hook call under the timeout; every failure becomes a block naming the hook."""
        name = self._names[index]
        moderator = self._moderators[index]
        with self._stuck_lock:
            stuck = self._stuck[index]
        if stuck >= MAX_STUCK_CALLS:
            log.error("moderation_hook_stuck", hook=name, direction=direction, stuck_calls=stuck)
            return Verdict.block(
                f"hook {name!r} is unavailable: {stuck} earlier calls timed out and are "
                "still running"
            )
        method = moderator.check_input if direction == "input" else moderator.check_output
        if self._worker is None:
            self._worker = _Worker()
        future = self._worker.submit(functools.partial(method, text, context))
        try:
            error = future.exception(timeout=self.timeout)
        except TimeoutError:
            self._abandon(index, future)
            log.error(
                "moderation_hook_timeout", hook=name, direction=direction, timeout=self.timeout
            )
            return Verdict.block(f"hook {name!r} timed out after {self.timeout:g}s")
        if error is not None:
            log.error(
                "moderation_hook_failed",
                hook=name,
                direction=direction,
                error=_short(error),
                exc_info=error,
            )
            return Verdict.block(f"hook {name!r} failed: {_short(error)}")
        result = future.result()
        if not isinstance(result, Verdict):
            problem = f"returned {type(result).__name__}, not a Verdict"
            log.error("moderation_hook_failed", hook=name, direction=direction, error=problem)
            return Verdict.block(f"hook {name!r} {problem}")
        return result

    def _abandon(self, index: int, future: Future[Any]) -> None:
        """Leave the stuck call to its thread and give later calls a fresh one."""
        with self._stuck_lock:
            self._stuck[index] += 1

        def finished(_: Future[Any]) -> None:
            with self._stuck_lock:
                self._stuck[index] -= 1

        future.add_done_callback(finished)
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def moderator_name(moderator: object) -> str:
    name = getattr(moderator, "name", None)
    return name if isinstance(name, str) and name else type(moderator).__name__


def _unique_names(moderators: Sequence[object]) -> tuple[str, ...]:
    """Hook names for logs and verdicts; a repeated name gets its position (`words#3`)."""
    names = [moderator_name(m) for m in moderators]
    return tuple(
        f"{name}#{index + 1}" if names.count(name) > 1 else name for index, name in enumerate(names)
    )
