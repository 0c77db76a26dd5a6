"""The one way generated text reaches IRC: output moderation, clean-up, splitting into safe
lines, and sending them paced, each line recorded only once it is written.

Used for replies in channels and queries and for `ask`'s answers. Model output never becomes
an IRC command: a line that looks like one (`/join ...`) is dropped, `/me` becomes a CTCP
ACTION where actions are allowed, and every line goes through `irc.text`'s sanitiser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relaybot.bridge.layout import OutLine, pieces, wrap
from relaybot.bridge.ports import OutputModeration, Sender
from relaybot.irc.multiline import Part
from relaybot.irc.outbox import Batch
from relaybot.log import get_logger
from relaybot.moderation import Decision, ModerationContext

log = get_logger(component="replies")

# A line may go out as a /me: leave room for the CTCP framing in every line's budget.
ACTION_FRAMING = len("\x01ACTION \x01")


def moderated(
    moderation: OutputModeration | None,
    text: str,
    context: ModerationContext,
    log_context: Mapping[str, Any],
    *,
    what: str = "reply",
) -> str | None:
    """The text as output moderation lets it out, or None when blocked (logged as
    `{what}_blocked`; a replacement as `{what}_replaced`)."""
    if moderation is None:
        return text
    verdict = moderation.check_output(text, context)
    if verdict.decision is Decision.BLOCK:
        log.warning(f"{what}_blocked", hook=verdict.hook, reason=verdict.reason, **log_context)
        return None
    if verdict.decision is Decision.REPLACE:
        log.info(f"{what}_replaced", hook=verdict.hook, reason=verdict.reason, **log_context)
        return verdict.text
    return text


def irc_lines(
    text: str,
    *,
    speaker: str,
    budget: int,
    max_lines: int,
    actions: bool,
    log_context: Mapping[str, Any],
) -> list[OutLine]:
    """Model text as at most `max_lines` lines of at most `budget` bytes, cut where the cap
    falls (see `layout.pieces` for what is dropped); answers that offer `more` use
    `layout.lay_out` instead."""
    parts = pieces(text, speaker=speaker, actions=actions, log_context=log_context)
    return wrap(parts, budget)[:max_lines]


def line_budget(sender: Sender, target: str) -> int:
    """Bytes of text one line to `target` may carry, with room for a /me's framing."""
    return sender.payload_budget(target) - ACTION_FRAMING


def send_lines(
    sender: Sender,
    target: str,
    lines: list[OutLine],
    *,
    on_written: Callable[[OutLine, bool], None] | None = None,
    on_lost: Callable[[OutLine], Callable[[], object]] | None = None,
    batch: Batch | None = None,
    in_reply_to: str | None = None,
) -> None:
    """Queue `lines` for `target`. `on_written(line, last)` runs when a line is delivered
    (written, or echoed where the server echoes; never for one that is dropped);
    `on_lost(line)` gives what to run if the connection dies before the server confirmed it.
    `batch` makes them one reply in the outbox: sent whole or dropped whole. `in_reply_to`:
    the msgid of the line they answer, to thread them to. Several text lines go as one
    draft/multiline message where the server takes it."""
    if len(lines) > 1 and not any(line.action for line in lines):
        parts = [
            Part(line.sent if i == 0 or line.joiner == "\n" else line.joiner + line.sent,
                 concat=i > 0 and line.joiner != "\n")
            for i, line in enumerate(lines)
        ]  # fmt: skip

        def all_written() -> None:
            if on_written is not None:
                for index, line in enumerate(lines):
                    on_written(line, index == len(lines) - 1)

        def all_lost() -> None:
            if on_lost is not None:
                for line in lines:
                    on_lost(line)()

        if sender.send_multiline(
            target, parts, on_sent=all_written, on_lost=all_lost, batch=batch,
            in_reply_to=in_reply_to,
        ):  # fmt: skip
            return
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        written = None
        if on_written is not None:

            def written_now(line: OutLine = line, last: bool = last) -> None:
                assert on_written is not None
                on_written(line, last)

            written = written_now
        sender.send_message(
            target,
            line.sent,
            action=line.action,
            on_sent=written,
            on_lost=on_lost(line) if on_lost is not None else None,
            batch=batch,
            in_reply_to=in_reply_to,
        )
