"""The bot speaking in its conversations: a reply's lines are sent as one batch that must start
going out within `[reply] max_age` of the request (a newer reply supersedes it while it has
not), each line recorded in the transcript when it is delivered (and taken back if the server
never confirmed it), repeats of the last few replies are dropped, and the times of finished
replies are kept for status; the observer hears what became of each reply, and when.

An answer is recorded as the model wrote it: its text lines delivered in a row are one turn of
the bot (a `more` continuation goes on in the same turn), a /me is a turn of its own."""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from relaybot.bridge.freshness import Freshness
from relaybot.bridge.layout import OutLine
from relaybot.bridge.observer import NoReplyObserver, ReplyObserver
from relaybot.bridge.ports import Sender
from relaybot.bridge.replies import send_lines
from relaybot.conversation.formats import Turn
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.transcript import SYSTEM, Transcript
from relaybot.irc.outbox import Batch
from relaybot.log import get_logger

log = get_logger(component="relay")

RECENT_REPLIES = 3  # a reply equal to one of a conversation's last few is dropped


# The supersession key of replies: a newer reply drops an older unsent one, not an answer of
# another kind (`ask`) to the same target.
REPLY = "reply"


class Answer:
    """One answer's delivered lines in its transcript. Text lines delivered in a row share one
    turn while nothing else was said after it; a line the server never confirmed is taken
    out of its turn again."""

    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self._segments: list[tuple[Turn, list[OutLine]]] = []

    def delivered(self, line: OutLine, speaker: str) -> None:
        if line.action:
            turn = Turn(SYSTEM, f"* {speaker} {line.text}")
            self.transcript.add([turn])
            self._segments.append((turn, [line]))
            return
        if self._segments:
            turn, lines = self._segments[-1]
            if turn.role == speaker and self.transcript.is_last(turn):
                lines.append(line)
                grown = Turn(speaker, _content(lines))
                if self.transcript.replace(turn, grown):
                    self._segments[-1] = (grown, lines)
                    return
                lines.pop()
        turn = Turn(speaker, line.text)
        self.transcript.add([turn])
        self._segments.append((turn, [line]))

    def turn_ids(self) -> set[int]:
        """The identities of the turns it is recorded in now."""
        return {id(turn) for turn, _ in self._segments}

    def lost(self, line: OutLine) -> None:
        """The server never confirmed `line`: it leaves the context."""
        for index, (turn, lines) in enumerate(self._segments):
            kept = [other for other in lines if other is not line]
            if len(kept) == len(lines):
                continue
            if not kept or turn.role == SYSTEM:
                self.transcript.retract(turn)
                del self._segments[index]
            else:
                shrunk = Turn(turn.role, _content(kept))
                self.transcript.replace(turn, shrunk)
                self._segments[index] = (shrunk, kept)
            return


def _content(lines: list[OutLine]) -> str:
    return lines[0].text + "".join(line.joiner + line.text for line in lines[1:])


class Speaking:
    def __init__(
        self,
        sender: Sender,
        wall_clock: Callable[[], float] = time.time,
        freshness: Freshness | None = None,
        observer: ReplyObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.wall_clock = wall_clock
        self.freshness = freshness
        self.observer = observer if observer is not None else NoReplyObserver()
        self.clock = clock  # monotonic, the one `requested_at` is stamped on
        self._recent: dict[ContextKey, deque[str]] = {}
        self._retrying: set[ContextKey] = set()  # the next reply there may repeat the last
        self.reply_times: deque[float] = deque(maxlen=10_000)  # wall clock, last line written

    def retrying(self, key: ContextKey) -> None:
        """An operator's retry: the next reply in `key` may repeat the last one."""
        self._retrying.add(key)

    def forget(self, key: ContextKey) -> None:
        self._recent.pop(key, None)
        self._retrying.discard(key)

    def say(
        self,
        key: ContextKey,
        transcript: Transcript,
        speaker: str,
        lines: list[OutLine],
        *,
        log_context: Mapping[str, Any],
        seconds: float,
        requested_at: float | None = None,
        answers: str | None = None,
        answer: Answer | None = None,
        supersede: bool = True,
        to: str | None = None,
    ) -> Answer | None:
        """Send a reply's lines to the conversation `transcript` holds; `requested_at` (the
        reactor's clock) is when the line it answers asked for it, `answers` that line's msgid
        (the reply is threaded to it where the server takes client tags), `answer` the answer
        they continue (`more`). `supersede`: a newer reply drops these lines while they have
        not started (not for the parts of one answer, which go in turn). `to`: a nick the
        lines go to privately instead; the conversation did not see them, so they are not
        recorded. The answer they are recorded in (or would be) when any line was queued,
        else None."""
        freshness = self.freshness
        if freshness is not None and requested_at is not None and freshness.is_stale(requested_at):
            freshness.drop(
                "stale",
                key,
                requested_at,
                stage="generated",
                seconds=round(seconds, 3),
                **log_context,
            )
            return None
        recent = self._recent.setdefault(key, deque(maxlen=RECENT_REPLIES))
        normalised = " ".join(
            " ".join(("/me " if line.action else "") + line.text for line in lines).split()
        ).lower()
        retried = key in self._retrying
        self._retrying.discard(key)
        if normalised and normalised in recent and not retried:
            log.info("reply_dropped_repeated", **log_context)
            self.observer.declined(key, "repeated_reply")
            return None
        if not lines:
            log.info("reply_empty", seconds=round(seconds, 3), **log_context)
            self.observer.failed(key, "empty")
            return None
        recent.append(normalised)
        record = answer if answer is not None else Answer(transcript)
        written = 0
        lost = False

        def on_written(line: OutLine, last: bool) -> None:
            # `reply_sent` comes with the last line written, never for lines that are dropped.
            nonlocal written
            if to is None:
                record.delivered(line, speaker)
            written += 1
            if written == 1 and requested_at is not None:
                self.observer.first_line(key, self.clock() - requested_at)
            if last:
                self.reply_times.append(self.wall_clock())
                self.observer.sent(key)
                log.info("reply_sent", lines=written, seconds=round(seconds, 3), **log_context)

        def on_lost(line: OutLine) -> Callable[[], object]:
            def retract() -> None:
                nonlocal lost
                record.lost(line)
                if not lost:  # one failure a reply, however many of its lines were lost
                    lost = True
                    self.observer.failed(key, "undelivered")

            return retract

        batch = None
        if freshness is not None and requested_at is not None:
            batch = Batch(
                deadline=freshness.deadline(requested_at),
                key=REPLY if supersede else None,
                requested=requested_at,
                on_dropped=functools.partial(
                    self._dropped, key, normalised, requested_at, log_context
                ),
            )
        send_lines(
            self.sender,
            to or transcript.name,
            lines,
            on_written=on_written,
            # Lines sent privately were never recorded: nothing to take back if they are lost.
            on_lost=on_lost if to is None else None,
            batch=batch,
            in_reply_to=answers,
        )
        if requested_at is not None:
            self.observer.queued(key, self.clock() - requested_at)
        return record

    def _dropped(
        self,
        key: ContextKey,
        normalised: str,
        requested_at: float,
        log_context: Mapping[str, Any],
        reason: str,
    ) -> None:
        """The outbox dropped a reply before its first line went: never said, never recorded,
        and not a repeat for the next reply to avoid."""
        assert self.freshness is not None
        recent = self._recent.get(key)
        if recent is not None and normalised in recent:
            recent.remove(normalised)
        self.freshness.drop(reason, key, requested_at, stage="queued", **log_context)
