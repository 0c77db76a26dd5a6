"""What the relay tells its observer (relaybot.bridge.observer) about each reply: sent, with
its timings on the relay's clock; declined, and why; failed, and why; and how many replies
are generating or waiting. Driven through the relay on recording doubles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from relaybot.bridge.freshness import Freshness
from relaybot.bridge.observer import DeclineReason, FailureReason
from relaybot.config.schema import PolicyConfig, ReplyConfig
from relaybot.conversation.identity import ContextKey
from relaybot.irc.events import Join, Names, Part
from relaybot.moderation import Verdict
from tests.support.bridge import (
    ALICE,
    BOB,
    BOT,
    NET,
    OTHERBOT,
    Clock,
    FakeModeration,
    Harness,
    make_relay,
)

CHAN = ContextKey(NET, "#chan")
MAX_AGE = 30.0


class Recorded:
    """A ReplyObserver that keeps every report as a tuple, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.depth: Callable[[], int] = lambda: -1

    def declined(self, key: ContextKey, reason: DeclineReason) -> None:
        self.events.append(("declined", key, reason))

    def failed(self, key: ContextKey, reason: FailureReason) -> None:
        self.events.append(("failed", key, reason))

    def queued(self, key: ContextKey, seconds: float) -> None:
        self.events.append(("queued", key, seconds))

    def first_line(self, key: ContextKey, seconds: float) -> None:
        self.events.append(("first_line", key, seconds))

    def sent(self, key: ContextKey) -> None:
        self.events.append(("sent", key))

    def queue_depth(self, depth: Callable[[], int]) -> None:
        self.depth = depth

    def outcomes(self) -> list[tuple[Any, ...]]:
        """The declines and failures."""
        return [event for event in self.events if event[0] in ("declined", "failed")]


def observed(**relay_args: Any) -> tuple[Harness, Recorded]:
    recorded = Recorded()
    relay_args.setdefault("reply", ReplyConfig(max_age=MAX_AGE, max_lines=3))
    h = make_relay(observer=recorded, **relay_args)
    for channel in ("#chan", "#other"):
        h.relay.handle(Join(BOT, channel))
        h.relay.handle(Names(channel, ("relaybot", "alice", "bob")))
    return h, recorded


def test_a_reply_is_queued_then_sent_with_its_times_since_the_request() -> None:
    h, recorded = observed()
    h.sender.deliver_now = False
    h.say(ALICE, "#chan", "relaybot: hi")
    h.clock.now += 3.0
    h.complete(h.jobs[0], "one\ntwo")
    assert recorded.events == [("queued", CHAN, 3.0)]
    h.clock.now += 2.0
    h.sender.flush()
    assert recorded.events[1:] == [("first_line", CHAN, 5.0), ("sent", CHAN)]
    assert len(h.sender.sent) == 2  # two lines, one reply


def test_what_the_relay_declines_is_reported_with_its_reason() -> None:
    h, recorded = observed(policy=PolicyConfig(cooldown=0.0, user_burst=1, user_per_minute=0.01))
    h.say(OTHERBOT, "#chan", "relaybot: hi")
    h.say(ALICE, "#chan", "relaybot: hi")
    h.say(ALICE, "#chan", "relaybot: hi")  # the same line again
    h.complete(h.jobs[0], "hello")
    h.say(ALICE, "#other", "relaybot: and here?")  # alice's one reply is spent
    h.relay.operator_state.mute("#other", 60.0)
    h.say(BOB, "#other", "relaybot: hello?")
    assert recorded.outcomes() == [
        ("declined", CHAN, "sender_is_bot"),
        ("declined", CHAN, "repeated_line"),
        ("declined", ContextKey(NET, "#other"), "user_budget"),
        ("declined", ContextKey(NET, "#other"), "muted"),
    ]


def test_no_room_to_generate_or_to_send_in_time_is_a_decline() -> None:
    h, recorded = observed(max_concurrent=1, max_waiting=1)
    h.relay.handle(Join(BOT, "#third"))
    h.say(ALICE, "#chan", "relaybot: one")  # generating
    h.say(ALICE, "#other", "relaybot: two")  # waiting
    h.say(ALICE, "#third", "relaybot: three")  # waiting: #other's request is dropped
    assert recorded.outcomes() == [("declined", ContextKey(NET, "#other"), "queue_full")]
    assert recorded.depth() == 2  # one generating, one waiting

    h, recorded = observed(accept=False)  # the worker's queue is full
    h.say(ALICE, "#chan", "relaybot: one")
    h.sender.delays["#other"] = MAX_AGE + 1  # its lines could not leave in time
    h.say(ALICE, "#other", "relaybot: two")
    assert recorded.outcomes() == [
        ("declined", CHAN, "queue_full"),
        ("declined", ContextKey(NET, "#other"), "backlog"),
    ]
    assert recorded.depth() == 0


def test_replies_dropped_after_generation_are_declines() -> None:
    moderation = FakeModeration()
    moderation.output_rules["forbidden"] = Verdict.block("test")
    h, recorded = observed(moderation=moderation)
    h.say(ALICE, "#chan", "relaybot: first")
    h.complete(h.jobs[-1], "same answer")
    h.say(ALICE, "#chan", "relaybot: second")
    h.complete(h.jobs[-1], "same answer")
    h.say(ALICE, "#chan", "relaybot: third")
    h.complete(h.jobs[-1], "something forbidden")
    h.say(ALICE, "#chan", "relaybot: fourth")
    h.clock.now += MAX_AGE + 1
    h.complete(h.jobs[-1], "too late")
    h.say(ALICE, "#chan", "relaybot: fifth")
    h.relay.handle(Part(BOT, "#chan"))
    h.complete(h.jobs[-1], "nobody is there")
    assert recorded.outcomes() == [
        ("declined", CHAN, "repeated_reply"),
        ("declined", CHAN, "moderation"),
        ("declined", CHAN, "stale"),
        ("declined", CHAN, "cancelled"),
    ]
    assert [event[0] for event in recorded.events].count("sent") == 1


def test_failures_are_reported_once_a_reply() -> None:
    h, recorded = observed()
    h.say(ALICE, "#chan", "relaybot: first")
    h.complete(h.jobs[-1], None, "EngineError: out of memory")
    h.say(ALICE, "#chan", "relaybot: second")
    h.complete(h.jobs[-1], "  \n\x00\x01\n")
    h.say(ALICE, "#chan", "relaybot: third")
    h.complete(h.jobs[-1], "one\ntwo")
    for retract in h.sender.unconfirmed:  # the link died before the server confirmed them
        retract()
    assert recorded.outcomes() == [
        ("failed", CHAN, "engine"),
        ("failed", CHAN, "empty"),
        ("failed", CHAN, "undelivered"),
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stale", ("declined", CHAN, "stale")),
        ("superseded", ("declined", CHAN, "superseded")),
        ("backlog", ("declined", CHAN, "backlog")),
        ("outbox full", ("failed", CHAN, "outbox_full")),
        ("something new", ("failed", CHAN, "undelivered")),
    ],
)
def test_freshness_files_each_drop_as_a_decline_or_a_failure(
    reason: str, expected: tuple[str, ContextKey, str]
) -> None:
    recorded = Recorded()
    freshness = Freshness(lambda: MAX_AGE, Clock(), recorded)
    freshness.drop(reason, CHAN, 0.0)
    assert recorded.events == [expected]
    assert sum(freshness.dropped.values()) == 1
