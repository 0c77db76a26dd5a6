"""The send side of a session: text as sanitised, split PRIVMSG/NOTICE lines in the outbox,
the paced flush to the socket, and the delivery checks (PINGs whose PONG confirms every line
written before them, relaybot.irc.delivery), down to what a lost link drops and retracts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relaybot.irc.connection import BotConnection
from relaybot.irc.delivery import Delivery
from relaybot.irc.outbox import Batch, Outbox, Outgoing
from relaybot.irc.text import reply_lines, safe_line

# Lines one send_message/send_notice may become when its text is longer than a line.
MAX_LINES_PER_TEXT = 8


class Writer:
    """Lines out through `connection`, written only while `ready()` (registered, connected)."""

    def __init__(
        self,
        connection: BotConnection,
        outbox: Outbox,
        *,
        ready: Callable[[], bool],
        budget: Callable[[str], int],
        fold: Callable[[str], str],
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        self.connection = connection
        self.outbox = outbox
        self.delivery = Delivery()
        self.ready = ready
        self.budget = budget  # payload bytes a PRIVMSG to a target may carry
        self.fold = fold
        self.clock = clock
        self.log = log
        self._ack_item: Outgoing | None = None  # the delivery check queued, not yet written

    def queue_text(
        self,
        command: str,
        target: str,
        text: str,
        on_sent: Callable[[], None] | None,
        on_lost: Callable[[], object] | None,
        *,
        action: bool = False,
        batch: Batch | None = None,
    ) -> None:
        target = safe_line(target).split(" ")[0]
        if not single_target(target):
            return
        wrapper = ("\x01ACTION ", "\x01") if action else ("", "")
        # NOTICE is shorter than PRIVMSG, so the PRIVMSG budget fits both.
        budget = self.budget(target) - len("".join(wrapper))
        if budget < 16:
            self.log.warning("line_dropped_target_too_long", target=target[:64])
            return
        pieces = reply_lines(text, budget, MAX_LINES_PER_TEXT)
        folded = self.fold(target)
        for index, piece in enumerate(pieces):
            line = f"{command} {target} :{wrapper[0]}{piece}{wrapper[1]}"
            if index < len(pieces) - 1:
                self.queue(Outgoing(line, target=folded, batch=batch))
            else:  # the last piece confirms the ones before it
                self.queue(Outgoing(line, on_sent, folded, on_lost, batch))

    def queue(self, item: Outgoing) -> None:
        if not self.ready():
            # Never held for a later connection: the channel may not be ours by then.
            self.log.warning("line_dropped_disconnected", channel=item.target)
            return
        if item.batch is not None and item.batch.dropped:
            return  # the rest of a reply the outbox already dropped
        if not self.outbox.push(item):
            self.log.warning("outbox_full_line_dropped", channel=item.target)
            if item.batch is not None:  # the rest of its reply would make no sense alone
                self.outbox.drop_batch(item.target, item.batch, "outbox full")

    def flush(self, now: float) -> None:
        """Write the lines the outbox's pacing allows at `now`, then ask for a delivery check."""
        if not self.ready():
            return
        due = self.outbox.due(now)
        for written, item in enumerate(due):
            if not self.connection.send_raw(item.line):
                if self.connection.is_connected():  # refused as malformed: only this line
                    if item is self._ack_item:
                        self._drop_ack()
                    continue
                # Not written, so never recorded as said; the disconnect dropped the rest.
                self.log.warning("unsent_lines_dropped", count=len(due) - written)
                return
            if item is self._ack_item:
                self._ack_item = None
                self.delivery.ack_written()
                continue
            if item.on_sent is not None:
                item.on_sent()
            if item.on_lost is not None:
                self.delivery.written(item.on_lost, self.clock())
        # The real clock: a shutdown flushes with a time far ahead, and must not queue a PING
        # that no later flush would write.
        token = self.delivery.want_ack(self.clock())
        if token is not None:
            # Paced like any line, so that confirming costs flood budget, never a kill.
            self._ack_item = Outgoing(f"PING :{token}")
            if not self.outbox.push(self._ack_item):
                self._drop_ack()
                self.log.warning("delivery_check_dropped", reason="outbox full")

    def _drop_ack(self) -> None:
        self._ack_item = None
        self.delivery.ack_dropped()

    def confirm_before_quit(self, deadline: float, process: Callable[[float], None]) -> None:
        """At shutdown, before QUIT: PING until the server has confirmed every line written,
        so that lines it has are kept in the saved contexts, not retracted. `process` reads
        the server for up to the seconds it is given."""
        if self._ack_item is not None:  # queued, never written: ask again directly
            self._drop_ack()
        while len(self.delivery) and self.connection.is_connected() and self.clock() < deadline:
            if not self.delivery.awaiting_pong:
                token = self.delivery.want_ack(self.clock(), at_once=True)
                if token is None or not self.connection.send_raw(f"PING :{token}"):
                    return
                self.delivery.ack_written()
            process(0.1)

    def disconnected(self) -> None:
        """The link is gone: drop what was never written, retract what was never confirmed."""
        dropped = self.outbox.clear()
        if dropped:
            self.log.warning("unsent_lines_dropped", count=len(dropped))
        self._ack_item = None
        retractions = self.delivery.lost()
        if retractions:
            # Written, but the server never confirmed them: no longer counted as said.
            self.log.warning("unconfirmed_lines_retracted", count=len(retractions))
        for retract in retractions:
            try:
                retract()
            except Exception:
                self.log.exception("retract_failed")


def single_target(target: str) -> bool:
    """One nick or channel: never a comma list, a $mask broadcast or a status-prefixed name."""
    return bool(target) and "," not in target and target[0] not in "$@%+~:"
