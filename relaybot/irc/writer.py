"""The send side of a session: text as sanitised, split PRIVMSG/NOTICE lines in the outbox,
the paced flush to the socket, and knowing which written lines the server really has, down to
what a lost link drops and retracts.

Where the server gave echo-message, a PRIVMSG/NOTICE counts as said when the server echoes it
back (relaybot.irc.echoes): its `on_sent` waits for the echo, and a line never echoed is never
recorded. Without it, a line counts as said when written, and the delivery checks (PINGs whose
PONG confirms every line written before them, relaybot.irc.delivery) retract the lines a lost
link swallowed. Which of the two applies is decided for each line as it is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from relaybot.irc.connection import BotConnection
from relaybot.irc.delivery import Delivery
from relaybot.irc.echoes import Echoes
from relaybot.irc.message import parse
from relaybot.irc.multiline import Part, batch_lines
from relaybot.irc.outbox import LINE_BREAK, Batch, Outbox, Outgoing
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
        echoing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.connection = connection
        self.outbox = outbox
        self.delivery = Delivery()
        self.echoes = Echoes(fold, clock)
        self.echoing = echoing  # the server echoes our PRIVMSG/NOTICE lines (echo-message)
        self.ready = ready
        self.budget = budget  # payload bytes a PRIVMSG to a target may carry
        self.fold = fold
        self.clock = clock
        self.log = log
        self._ack_item: Outgoing | None = None  # the delivery check queued, not yet written
        self._multiline_refs = 0

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
        tags: str = "",
    ) -> None:
        """`tags`: client tags for every line, already escaped (`+draft/reply=id`), or ""."""
        clean = one_target(target)
        if clean is None:
            return
        target = clean
        wrapper = ("\x01ACTION ", "\x01") if action else ("", "")
        # NOTICE is shorter than PRIVMSG, so the PRIVMSG budget fits both.
        budget = self.budget(target) - len("".join(wrapper))
        if budget < 16:
            self.log.warning("line_dropped_target_too_long", target=target[:64])
            return
        pieces = reply_lines(text, budget, MAX_LINES_PER_TEXT)
        folded = self.fold(target)
        # Tags do not count against the 512 bytes of the message itself (IRCv3 message-tags).
        prefix = f"@{tags} " if tags else ""
        for index, piece in enumerate(pieces):
            line = f"{prefix}{command} {target} :{wrapper[0]}{piece}{wrapper[1]}"
            if index < len(pieces) - 1:
                self.queue(Outgoing(line, target=folded, batch=batch))
            else:  # the last piece confirms the ones before it
                self.queue(Outgoing(line, on_sent, folded, on_lost, batch))

    def queue_multiline(
        self,
        target: str,
        parts: Sequence[Part],
        on_sent: Callable[[], None] | None,
        on_lost: Callable[[], object] | None,
        *,
        batch: Batch | None = None,
        tags: str = "",
    ) -> bool:
        """Queue `parts` as one draft/multiline batch (relaybot.irc.multiline): one outbox
        item whose lines are written together, since nothing else may be sent while a batch
        is open. The server delivers the message at `BATCH -`: `on_sent` runs once all are
        written, and the batch is confirmed like a line without echo-message (a PING after
        it); its lines are not matched against echoes. False: nothing queued (a part that
        is not one safe line within the budget, or no single target)."""
        clean = one_target(target)
        if clean is None:
            return False
        budget = self.budget(clean)
        for part in parts:
            if safe_line(part.text) != part.text.strip() or len(part.text.encode()) > budget:
                return False
        self._multiline_refs += 1
        folded = self.fold(clean)
        lines = batch_lines(f"ml{self._multiline_refs}", clean, parts, tags)
        self.queue(Outgoing(LINE_BREAK.join(lines), on_sent, folded, on_lost, batch))
        return True

    def queue_ctcp_reply(self, nick: str, body: str) -> bool:
        """Queue `NOTICE nick :\\x01body\\x01` (relaybot.irc.ctcp) as one connection-level
        line: paced like any other, with no on_sent, so it enters no conversation. The
        framing is the line's only \\x01: `body` is sanitised again here, and a reply too long
        for one line is dropped, never cut or split. False: not queued."""
        target = one_target(nick)
        body = safe_line(body)
        if target is None or not body:
            return False
        framed = f"\x01{body}\x01"
        # NOTICE is shorter than PRIVMSG, so the PRIVMSG budget fits it.
        if len(framed.encode()) > self.budget(target):
            self.log.debug("ctcp_reply_too_long", target=target[:64])
            return False
        before = len(self.outbox)
        self.queue(Outgoing(f"NOTICE {target} :{framed}"))
        return len(self.outbox) > before

    def queue_tagmsg(self, target: str, tags: str, batch: Batch | None = None) -> None:
        """Queue `@tags TAGMSG target` (client tags only, such as `+typing=active`; `tags`
        already escaped), paced like any line and never part of a conversation."""
        clean = one_target(target)
        if clean is not None:
            self.queue(Outgoing(f"@{tags} TAGMSG {clean}", target=self.fold(clean), batch=batch))

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
            # Decided as the line goes: the cap can come (CAP NEW) or go (CAP DEL) any time.
            lines = item.line.split(LINE_BREAK)  # several only for a draft/multiline batch
            echo = message_parts(item.line) if self.echoing() and len(lines) == 1 else None
            if not all(self.connection.send_raw(line) for line in lines):
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
            if echo is not None:
                # Said once the server echoes it: the echo proves it was relayed, so no PING
                # confirms it and nothing has to retract it.
                self._await_echo(echo, item.on_sent)
                continue
            if item.on_sent is not None:
                item.on_sent()
            if item.on_lost is not None:
                self.delivery.written(item.on_lost, self.clock())
        self._check_echoes()
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

    def _await_echo(self, parts: tuple[str, str, str], on_sent: Callable[[], None] | None) -> None:
        pushed_out = self.echoes.written(*parts, on_sent)
        if pushed_out:
            self.log.warning(
                "line_not_echoed", count=pushed_out, reason="too many lines awaiting their echo"
            )

    def _check_echoes(self) -> None:
        waited = self.echoes.missing()
        if waited is not None:
            self.log.warning(
                "echo_missing",
                waited_s=round(waited, 1),
                awaiting=len(self.echoes),
                problem="the server enabled echo-message but does not echo the bot's lines;"
                " until it does, nothing the bot says is recorded in its context",
            )

    def echoed(self, command: str, target: str, text: str) -> None:
        """The server sent one of our own PRIVMSG/NOTICE lines back (echo-message): the line
        it matches now counts as said, and older lines still waiting were never relayed."""
        echo = self.echoes.echoed(command, target, text)
        if echo is None:
            # Not written by this writer on this connection (or already given up on).
            self.log.debug("echo_unmatched", command=command, target=target)
            return
        if echo.skipped:
            # The server answered those with an error (404, a ban) instead of relaying them.
            self.log.warning(
                "line_not_echoed", count=echo.skipped, reason="a later line was echoed first"
            )
        if echo.on_sent is not None:
            echo.on_sent()

    def _drop_unechoed(self) -> None:
        count = self.echoes.lost()
        if count:
            # Written, but never echoed: the server may never have had them. Not recorded.
            self.log.warning("unechoed_lines_dropped", count=count)

    def confirm_before_quit(self, deadline: float, process: Callable[[float], None]) -> None:
        """At shutdown, before QUIT: until `deadline`, PING until the server has confirmed
        every line written, and wait for the echo of every line it echoes, so that lines it
        has are kept in the saved contexts. Lines still not echoed then are dropped. `process`
        reads the server for up to the seconds it is given."""
        if self._ack_item is not None:  # queued, never written: ask again directly
            self._drop_ack()
        while (
            (len(self.delivery) or len(self.echoes))
            and self.connection.is_connected()
            and self.clock() < deadline
        ):
            # Echoed lines need no PING: their echoes are on the way, in order.
            if len(self.delivery) and not self.delivery.awaiting_pong:
                token = self.delivery.want_ack(self.clock(), at_once=True)
                if token is None or not self.connection.send_raw(f"PING :{token}"):
                    break
                self.delivery.ack_written()
            process(0.1)
        self._drop_unechoed()

    def disconnected(self) -> None:
        """The link is gone: drop what was never written or never echoed, retract what was
        never confirmed."""
        dropped = self.outbox.clear()
        if dropped:
            self.log.warning("unsent_lines_dropped", count=len(dropped))
        self._ack_item = None
        self._drop_unechoed()
        retractions = self.delivery.lost()
        if retractions:
            # Written, but the server never confirmed them: no longer counted as said.
            self.log.warning("unconfirmed_lines_retracted", count=len(retractions))
        for retract in retractions:
            try:
                retract()
            except Exception:
                self.log.exception("retract_failed")


def message_parts(line: str) -> tuple[str, str, str] | None:
    """(command, target, text) of a PRIVMSG/NOTICE line as queue_text builds it, client tags
    left out (the echo is matched on the message); None for any other line (the delivery
    check's PING, a TAGMSG)."""
    message = parse(line)
    if message is None or message.command not in ("PRIVMSG", "NOTICE"):
        return None
    if "batch" in message.tags:
        return None  # inside a draft/multiline batch: its BATCH - line is confirmed instead
    if len(message.params) != 2:
        return None
    return message.command, message.params[0], message.params[1]


def one_target(target: str) -> str | None:
    """`target` as one safe nick or channel to write to, or None where it is none."""
    cleaned = safe_line(target).split(" ")[0]
    return cleaned if single_target(cleaned) else None


def single_target(target: str) -> bool:
    """One nick or channel: never a comma list, a $mask broadcast or a status-prefixed name."""
    return bool(target) and "," not in target and target[0] not in "$@%+~:"
