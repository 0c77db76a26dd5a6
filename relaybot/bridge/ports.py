"""What the bridge needs from the rest of the bot, as Protocols: the IRC session that sends,
the inference worker that runs jobs, timers, operator commands and moderation. The service
wires the real ones; tests pass recording doubles (tests/support/bridge.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from relaybot.conversation.identity import ContextKey
from relaybot.inference.worker import Job
from relaybot.irc.events import Message
from relaybot.irc.multiline import Part
from relaybot.irc.outbox import Batch
from relaybot.moderation import ModerationContext, Verdict


class Sender(Protocol):
    """The IRC session, as replies use it."""

    @property
    def nick(self) -> str: ...

    @property
    def casemapping(self) -> str: ...

    def payload_budget(self, target: str) -> int: ...

    def send_message(
        self,
        target: str,
        text: str,
        *,
        action: bool = False,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[], object] | None = None,
        batch: Batch | None = None,
        in_reply_to: str | None = None,
    ) -> None:
        """`in_reply_to`: the msgid of the line this answers; where the server takes client
        tags the lines carry `+draft/reply` with it."""
        ...

    def send_multiline(
        self,
        target: str,
        parts: Sequence[Part],
        *,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[], object] | None = None,
        batch: Batch | None = None,
        in_reply_to: str | None = None,
    ) -> bool:
        """Queue `parts` as one IRCv3 draft/multiline message where the server takes it;
        False, with nothing queued, where it does not."""
        ...

    def drop_queued(self, target: str) -> int: ...

    def send_notice(self, target: str, text: str) -> None: ...

    def typing(self, target: str, *, active: bool) -> None:
        """Tell `target` the bot is (still) writing a reply, or has stopped, where the server
        takes client tags; nothing otherwise."""
        ...

    def send_delay(self, target: str) -> float:
        """Seconds a line queued now for `target` would wait for its turn to go out."""
        ...


class JobQueue(Protocol):
    """The inference worker, as the bridge uses it."""

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full."""
        ...

    def cancel(self, job_id: int) -> None:
        """Skip the job if queued, stop it if decoding; its completion is then dropped."""
        ...

    def forget(self, key: ContextKey) -> None:
        """Drop the engine's cached prompt prefix for a conversation."""
        ...


class Timers(Protocol):
    def schedule(self, delay: float, fn: Callable[[], None]) -> None: ...


class Commands(Protocol):
    """Operator commands (control.dispatch.Control): recognised, then handled instead of
    entering a context."""

    def is_command(self, text: str) -> bool: ...

    def handle(self, message: Message, channel: str | None) -> None: ...


class OutputModeration(Protocol):
    def check_output(self, text: str, context: ModerationContext) -> Verdict: ...


class Moderation(OutputModeration, Protocol):
    def check_input(self, text: str, context: ModerationContext) -> Verdict: ...
