"""What the bridge reports about replies, for metrics: the `ReplyObserver` seam the relay takes
(one relay, one network), the fixed sets of reasons a reply is declined or fails for, and the
no-op default.

A reply is declined when the bot chose not to answer (policy, budgets, freshness, moderation)
and failed when it meant to and could not (the engine, an empty reply, lines not delivered).
Each report names its conversation by ContextKey; calls come on the reactor thread, except
`queue_depth`'s reader, which the observer may call from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from relaybot.conversation.identity import ContextKey
from relaybot.policy.gate import Refusal

DeclineReason = (
    Refusal  # the reply gate: loop_guard, cooldown, user_budget, channel_budget
    | Literal[
        "sender_is_bot",  # a bot asked, and bots are ignored
        "repeated_line",  # the asker repeated a line within policy.repeat_window
        "muted",  # an operator muted the conversation (before or while generating)
        "backlog",  # too many lines queued to go out for a reply to leave within max_age
        "queue_full",  # no room among the conversations waiting, or in the worker's queue
        "stale",  # past reply.max_age before it could start going out
        "superseded",  # a newer reply to the same conversation went instead
        "repeated_reply",  # the same as one of the conversation's last few replies
        "moderation",  # output moderation blocked the reply
        "cancelled",  # the conversation was reset, parted or forgotten while generating
    ]
)

FailureReason = Literal[
    "engine",  # generation failed
    "empty",  # the model wrote nothing that could be said
    "outbox_full",  # the outbox refused the reply's lines
    "undelivered",  # the link died before the server confirmed a line of it
]


class ReplyObserver(Protocol):
    def declined(self, key: ContextKey, reason: DeclineReason) -> None: ...

    def failed(self, key: ContextKey, reason: FailureReason) -> None: ...

    def queued(self, key: ContextKey, seconds: float) -> None:
        """A reply's lines were handed to the outbox `seconds` after the line that asked for
        it: generation, moderation and layout are done."""
        ...

    def first_line(self, key: ContextKey, seconds: float) -> None:
        """A reply's first line was written to the server (echoed back, where the server
        echoes) `seconds` after the line that asked for it."""
        ...

    def sent(self, key: ContextKey) -> None:
        """A reply's last line was written: the reply went out whole."""
        ...

    def queue_depth(self, depth: Callable[[], int]) -> None:
        """Given once: how many replies are being generated or waiting for a slot now. It reads
        two sizes, so any thread may call it."""
        ...


class NoReplyObserver:
    """The default: nothing is observed."""

    def declined(self, key: ContextKey, reason: DeclineReason) -> None:
        pass

    def failed(self, key: ContextKey, reason: FailureReason) -> None:
        pass

    def queued(self, key: ContextKey, seconds: float) -> None:
        pass

    def first_line(self, key: ContextKey, seconds: float) -> None:
        pass

    def sent(self, key: ContextKey) -> None:
        pass

    def queue_depth(self, depth: Callable[[], int]) -> None:
        pass
