"""Unit tests for freshness (`[reply] max_age`) on an injected clock: relaybot.bridge.freshness
itself, and through the relay: replies dropped as stale at each stage, supersession, and
backpressure. The outbox here is the real one (relaybot.irc.outbox), driven by the test."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from relaybot.bridge.freshness import Freshness
from relaybot.bridge.speaking import REPLY
from relaybot.config.schema import PolicyConfig, ReplyConfig
from relaybot.irc.events import Join, Names
from relaybot.irc.outbox import Batch, Outbox, Outgoing
from relaybot.irc.text import casefold
from tests.support.bridge import ALICE, BOB, BOT, Clock, FakeSender, Harness, make_relay

MAX_AGE = 30.0


def test_deadline_and_staleness_follow_the_bound():
    clock = Clock(100.0)
    bound = [MAX_AGE]
    freshness = Freshness(lambda: bound[0], clock)
    assert freshness.deadline(100.0) == 130.0
    clock.now = 130.0
    assert not freshness.is_stale(100.0)
    clock.now = 130.5
    assert freshness.is_stale(100.0) and freshness.age(100.0) == 30.5
    bound[0] = 60.0  # a reload changes the bound: read each time
    assert not freshness.is_stale(100.0)


def test_too_late_to_start_counts_the_wait_and_the_expected_generation():
    freshness = Freshness(lambda: MAX_AGE, Clock())
    assert not freshness.too_late_to_start(29.0)
    assert freshness.too_late_to_start(31.0)
    for _ in range(50):
        freshness.generated(10.0)
    assert freshness.expected_generation == pytest.approx(10.0, abs=0.01)
    assert not freshness.too_late_to_start(19.0)
    assert freshness.too_late_to_start(21.0)


def test_a_slow_model_alone_does_not_silence_the_bot():
    freshness = Freshness(lambda: MAX_AGE, Clock())
    for _ in range(50):
        freshness.generated(100.0)  # far slower than the bound
    assert not freshness.too_late_to_start(0.0)
    assert freshness.too_late_to_start(MAX_AGE / 2 + 1)


# --- through the relay --------------------------------------------------------------------


class OutboxSender(FakeSender):
    """The bridge's sender on a real Outbox: lines go out when the test calls `flush(now)`."""

    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        super().__init__()
        self.outbox = outbox
        self.clock = clock
        self.written: list[str] = []

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
        self.batches.append(batch)
        line = f"PRIVMSG {target} :{text}"
        self.outbox.push(Outgoing(line, on_sent, casefold(target), on_lost, batch))

    def send_delay(self, target: str) -> float:
        return self.outbox.wait(casefold(target), self.clock())

    def flush(self, now: float | None = None) -> None:  # type: ignore[override]
        for item in self.outbox.due(self.clock() if now is None else now):
            self.written.append(item.line)
            if item.on_sent is not None:
                item.on_sent()


def harness(
    *, sender: FakeSender | None = None, policy: PolicyConfig | None = None, **relay_args: object
) -> Harness:
    h = make_relay(reply=ReplyConfig(max_age=MAX_AGE), policy=policy, **relay_args)
    if sender is not None:
        # The relay was built on the harness's FakeSender: swap in this one everywhere.
        h.relay.sender = h.relay.speaking.sender = sender
        h.relay.scheduler.send_delay = sender.send_delay
        h = dataclasses.replace(h, sender=sender)
    for channel in ("#chan", "#other"):
        h.relay.handle(Join(BOT, channel))
        h.relay.handle(Names(channel, ("relaybot", "alice", "bob")))
    return h


def real_outbox(clock: Clock) -> OutboxSender:
    return OutboxSender(Outbox(burst=1, interval=1.0, bytes_per_second=10**9), clock)


def bot_lines(h: Harness, channel: str) -> list[str]:
    return [turn.content for turn in h.turns(channel) if turn.role == "relaybot"]


def test_a_reply_carries_a_batch_with_its_deadline():
    h = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    asked = h.clock.now
    h.clock.now += 4.0
    h.complete(h.jobs[0], "hello there")
    batch = h.sender.batches[-1]
    assert batch is not None and batch.key == REPLY
    assert batch.deadline == asked + MAX_AGE and batch.requested == asked


def test_a_completion_later_than_the_bound_is_dropped_unsent_and_unrecorded():
    h = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    h.clock.now += MAX_AGE + 1
    with capture_logs() as logs:
        h.complete(h.jobs[0], "too late")
    assert h.sender.sent == [] and bot_lines(h, "#chan") == []
    stale = [e for e in logs if e["event"] == "reply_dropped_stale"]
    assert stale and stale[0]["stage"] == "generated" and stale[0]["age_s"] == MAX_AGE + 1
    assert h.relay.freshness.dropped["stale"] == 1


def test_a_reply_queued_behind_a_backlog_past_its_deadline_is_dropped_and_not_recorded():
    clock = Clock()
    sender = real_outbox(clock)
    h = harness(sender=sender)
    sender.outbox.push(Outgoing("PRIVMSG #chan :old", target="#chan"))
    sender.flush()  # #chan was just served: its next line waits a second
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "in time")
    for _ in range(20):  # the other channel keeps the link busy past the deadline
        sender.outbox.push(Outgoing("PRIVMSG #other :busy", target="#other"))
    with capture_logs() as logs:
        sender.flush(clock.now + MAX_AGE + 1)
    assert "PRIVMSG #chan :in time" not in sender.written
    assert bot_lines(h, "#chan") == []
    assert [e["stage"] for e in logs if e["event"] == "reply_dropped_stale"] == ["queued"]
    assert h.relay.freshness.dropped["stale"] == 1


def test_a_newer_reply_supersedes_an_unsent_older_one():
    clock = Clock()
    sender = real_outbox(clock)
    h = harness(sender=sender)
    sender.outbox.push(Outgoing("PRIVMSG #x :first", target="#x"))
    sender.flush()  # the link's one-line burst is spent: the next line waits a second
    h.say(ALICE, "#chan", "relaybot: one")
    h.complete(h.jobs[0], "answer to one")
    h.say(BOB, "#chan", "relaybot: two")
    with capture_logs() as logs:
        h.complete(h.jobs[1], "answer to two")
    assert [e["event"] for e in logs if e["event"].startswith("reply_dropped")] == [
        "reply_dropped_superseded"
    ]
    clock.now += 5.0
    for _ in range(5):
        sender.flush()
        clock.now += 1.0
    assert [line for line in sender.written if "#chan" in line] == ["PRIVMSG #chan :answer to two"]
    assert bot_lines(h, "#chan") == ["answer to two"]
    assert h.relay.freshness.dropped["superseded"] == 1


def test_a_started_reply_is_not_superseded():
    clock = Clock()
    sender = real_outbox(clock)
    h = harness(sender=sender)
    h.say(ALICE, "#chan", "relaybot: one")
    h.complete(h.jobs[0], "line one\nline two")
    sender.flush()  # the first line goes: the reply has started
    h.say(BOB, "#chan", "relaybot: two")
    h.complete(h.jobs[1], "answer to two")
    for _ in range(4):
        clock.now += 1.0
        sender.flush()
    assert bot_lines(h, "#chan") == ["line one", "line two", "answer to two"]
    assert h.relay.freshness.dropped["superseded"] == 0


def test_backpressure_declines_a_generation_whose_lines_could_not_leave_in_time():
    h = harness(policy=PolicyConfig(cooldown=0.0))
    h.sender.delays["#chan"] = MAX_AGE + 5
    with capture_logs() as logs:
        h.say(ALICE, "#chan", "relaybot: are you there?")
    assert h.jobs == []
    declined = [e for e in logs if e["event"] == "reply_declined"]
    assert declined and declined[0]["reason"] == "backlog" and declined[0]["send_wait_s"] == 35
    assert h.relay.freshness.dropped["backlog"] == 1
    # No budget was spent on it: once the queue drains, the same person is answered at once.
    h.sender.delays.clear()
    for text in ("relaybot: a", "relaybot: b", "relaybot: c"):
        h.say(ALICE, "#chan", text)
        h.complete(h.jobs[-1], f"re {text}")
    assert len(h.jobs) == 3


def test_backpressure_uses_the_real_outbox_wait():
    clock = Clock()
    sender = real_outbox(clock)
    h = harness(sender=sender)
    for _ in range(40):  # 40 s of lines queued for #chan itself
        sender.outbox.push(Outgoing("PRIVMSG #chan :x", target="#chan"))
    h.say(ALICE, "#chan", "relaybot: hi")
    assert h.jobs == []
    h.say(BOB, "#other", "relaybot: hi")  # a quiet channel goes first: answered
    assert len(h.jobs) == 1 and h.jobs[0].reply_to == "#other"


def test_an_operator_retry_is_not_declined_for_backlog():
    h = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "hello")
    h.sender.delays["#chan"] = MAX_AGE + 5
    assert h.relay.retry("#chan")
    assert len(h.jobs) == 2


def test_a_request_that_waited_for_a_slot_past_the_bound_is_dropped():
    h = harness(max_concurrent=1)
    h.say(ALICE, "#chan", "relaybot: first")
    h.say(BOB, "#other", "relaybot: second")
    assert len(h.jobs) == 1 and h.relay.waiting() == 1
    assert h.relay.scheduler.oldest_request() == h.clock.now
    h.clock.now += MAX_AGE + 1
    with capture_logs() as logs:
        h.complete(h.jobs[0], "slow answer")  # stale itself, and frees the slot
    assert len(h.jobs) == 1 and h.relay.waiting() == 0
    stages = sorted(e["stage"] for e in logs if e["event"] == "reply_dropped_stale")
    assert stages == ["generated", "waiting"]
    assert h.relay.freshness.dropped["stale"] == 2
    assert h.relay.scheduler.oldest_request() is None


def test_a_request_waiting_for_a_slot_within_the_bound_starts():
    h = harness(max_concurrent=1)
    h.say(ALICE, "#chan", "relaybot: first")
    h.say(BOB, "#other", "relaybot: second")
    h.clock.now += MAX_AGE - 1
    h.complete(h.jobs[0], "answer")
    assert len(h.jobs) == 2 and h.jobs[1].reply_to == "#other"
    assert h.jobs[1].requested_at == h.clock.now - (MAX_AGE - 1)


def test_a_dropped_reply_does_not_count_as_said_for_the_repeat_guard():
    clock = Clock()
    sender = real_outbox(clock)
    h = harness(sender=sender)
    sender.outbox.push(Outgoing("PRIVMSG #x :first", target="#x"))
    sender.flush()
    h.say(ALICE, "#chan", "relaybot: one")
    h.complete(h.jobs[0], "same words")
    h.say(BOB, "#chan", "relaybot: two")
    h.complete(h.jobs[1], "other words")  # supersedes "same words", never sent
    h.say(ALICE, "#chan", "relaybot: three")
    h.complete(h.jobs[2], "same words")  # supersedes again: not a repeat of anything said
    for _ in range(4):
        clock.now += 1.0
        sender.flush()
    assert bot_lines(h, "#chan") == ["same words"]
