"""Unit tests for relaybot.policy.ratelimit.TokenBucket and relaybot.policy.gate.ReplyGate: budgets,
cooldown, loop guard and repeat guard, all on a hand-moved clock."""

from __future__ import annotations

import dataclasses
import math

import pytest

from relaybot.config.schema import PolicyConfig
from relaybot.policy.gate import ReplyGate
from relaybot.policy.ratelimit import TokenBucket


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Budgets so large they never bite, so each test can switch on the one limit it is about.
OPEN = PolicyConfig(
    user_burst=1000,
    user_per_minute=0.0,
    channel_burst=1000,
    channel_per_minute=0.0,
    cooldown=0.0,
    loop_limit=1000,
    loop_reset=1e9,
    repeat_window=300.0,
)


def gate(clock: FakeClock, **changes: object) -> ReplyGate:
    return ReplyGate(dataclasses.replace(OPEN, **changes), clock)  # type: ignore[arg-type]


# --- TokenBucket ------------------------------------------------------------------------------


def test_bucket_starts_full_and_empties():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=3, clock=clock)
    assert bucket.full
    assert bucket.tokens == 3
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert not bucket.can_take()
    assert not bucket.full


def test_bucket_refused_take_spends_nothing():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    assert bucket.take(1.5)
    assert not bucket.take(1.0)  # 0.5 left: refused
    assert bucket.tokens == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.take(1.0)


def test_bucket_refills_at_rate_and_caps_at_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=0.5, burst=2, clock=clock)
    bucket.take()
    bucket.take()
    clock.advance(1.0)
    assert bucket.tokens == pytest.approx(0.5)
    assert not bucket.can_take()
    clock.advance(1.0)
    assert bucket.can_take()
    clock.advance(1000.0)
    assert bucket.tokens == pytest.approx(2.0)
    assert bucket.full


def test_bucket_wait_time():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=1, clock=clock)
    assert bucket.wait_time() == 0.0
    bucket.take()
    assert bucket.wait_time() == pytest.approx(0.5)
    clock.advance(0.25)
    assert bucket.wait_time() == pytest.approx(0.25)
    assert bucket.wait_time(cost=2.0) == math.inf  # more than the bucket ever holds


def test_bucket_without_refill_never_recovers():
    clock = FakeClock()
    bucket = TokenBucket(rate=0.0, burst=1, clock=clock)
    assert bucket.take()
    clock.advance(1e9)
    assert not bucket.can_take()
    assert bucket.wait_time() == math.inf


def test_bucket_time_standing_still_adds_nothing():
    clock = FakeClock()
    bucket = TokenBucket(rate=100.0, burst=5, clock=clock)
    for _ in range(5):
        bucket.take()
    for _ in range(10):
        assert not bucket.take()


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 1), (1.0, 0), (1.0, -2)])
def test_bucket_rejects_bad_arguments(rate: float, burst: float):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, FakeClock())


# --- ReplyGate: budgets -----------------------------------------------------------------------


def test_open_gate_admits():
    g = gate(FakeClock())
    assert g.refusal("#c", "alice") is None
    assert g.admit("#c", "alice") is None


def test_user_budget_bites_and_refills():
    clock = FakeClock()
    g = gate(clock, user_burst=2, user_per_minute=6.0)  # one token per 10 s
    assert g.admit("#c", "alice") is None
    assert g.admit("#c", "alice") is None
    assert g.admit("#c", "alice") == "user_budget"
    assert g.admit("#c", "bob") is None  # budgets are per user
    clock.advance(9.0)
    assert g.admit("#c", "alice") == "user_budget"
    clock.advance(1.0)
    assert g.admit("#c", "alice") is None
    assert g.admit("#c", "alice") == "user_budget"


def test_user_budget_spans_conversations():
    g = gate(FakeClock(), user_burst=2)
    assert g.admit("#a", "alice") is None
    assert g.admit("#b", "alice") is None
    assert g.admit("#c", "alice") == "user_budget"


def test_channel_budget_bites_per_conversation():
    clock = FakeClock()
    g = gate(clock, channel_burst=2, channel_per_minute=60.0)  # one token per second
    assert g.admit("#c", "alice") is None
    assert g.admit("#c", "bob") is None
    assert g.admit("#c", "carol") == "channel_budget"
    assert g.admit("#other", "carol") is None
    clock.advance(1.0)
    assert g.admit("#c", "carol") is None


def test_refusal_is_a_question_and_spends_nothing():
    g = gate(FakeClock(), user_burst=1, channel_burst=1)
    for _ in range(10):
        assert g.refusal("#c", "alice") is None
    assert g.admit("#c", "alice") is None
    assert g.refusal("#c", "alice") == "user_budget"


def test_refused_admit_spends_no_budget():
    g = gate(FakeClock(), user_burst=2, cooldown=60.0)
    assert g.admit("#a", "alice") is None  # one user token left
    for _ in range(5):
        assert g.admit("#a", "alice") == "cooldown"
    assert g.admit("#b", "alice") is None  # the cooldown refusals did not spend it
    assert g.admit("#c", "alice") == "user_budget"


def test_refused_by_user_budget_spends_no_channel_budget():
    g = gate(FakeClock(), user_burst=1, channel_burst=2)
    assert g.admit("#c", "alice") is None
    for _ in range(5):
        assert g.admit("#c", "alice") == "user_budget"
    assert g.admit("#c", "bob") is None  # the channel still had its second token


# --- ReplyGate: cooldown ----------------------------------------------------------------------


def test_cooldown_between_replies_in_a_conversation():
    clock = FakeClock()
    g = gate(clock, cooldown=5.0)
    assert g.admit("#c", "alice") is None
    clock.advance(1.0)
    assert g.admit("#c", "bob") == "cooldown"  # per conversation, not per user
    assert g.admit("#other", "bob") is None
    clock.advance(3.9)
    assert g.refusal("#c", "bob") == "cooldown"
    clock.advance(0.1)
    assert g.admit("#c", "bob") is None


def test_zero_cooldown_never_refuses():
    g = gate(FakeClock(), cooldown=0.0)
    for _ in range(20):
        assert g.admit("#c", "alice") is None


# --- ReplyGate: loop guard --------------------------------------------------------------------


def exchange(g: ReplyGate, conversation: str, nick: str, text: str) -> str | None:
    """The nick says a line and asks for a reply."""
    g.heard(conversation, nick, text)
    return g.admit(conversation, nick)


def test_loop_guard_after_limit_replies_to_one_nick():
    g = gate(FakeClock(), loop_limit=3)
    assert [exchange(g, "#c", "otherbot", f"line {i}") for i in range(5)] == [
        None,
        None,
        None,
        "loop_guard",
        "loop_guard",
    ]


def test_loop_guard_ends_when_someone_else_speaks():
    g = gate(FakeClock(), loop_limit=2)
    exchange(g, "#c", "otherbot", "a")
    exchange(g, "#c", "otherbot", "b")
    assert exchange(g, "#c", "otherbot", "c") == "loop_guard"
    assert g.heard("#c", "alice", "hi all")
    assert exchange(g, "#c", "otherbot", "d") is None


def test_loop_guard_not_ended_by_the_same_nick_speaking():
    g = gate(FakeClock(), loop_limit=2)
    exchange(g, "#c", "otherbot", "a")
    exchange(g, "#c", "otherbot", "b")
    for i in range(5):
        g.heard("#c", "otherbot", f"more {i}")
    assert g.admit("#c", "otherbot") == "loop_guard"


def test_loop_guard_ends_after_loop_reset():
    clock = FakeClock()
    g = gate(clock, loop_limit=2, loop_reset=60.0)
    exchange(g, "#c", "otherbot", "a")
    exchange(g, "#c", "otherbot", "b")
    clock.advance(59.0)
    assert exchange(g, "#c", "otherbot", "c") == "loop_guard"
    clock.advance(2.0)  # 61 s since the last admitted reply
    assert exchange(g, "#c", "otherbot", "d") is None
    # and a new streak starts from one
    assert exchange(g, "#c", "otherbot", "e") is None
    assert exchange(g, "#c", "otherbot", "f") == "loop_guard"


def test_loop_guard_is_per_conversation_and_per_nick():
    g = gate(FakeClock(), loop_limit=1)
    assert exchange(g, "#a", "otherbot", "x") is None
    assert exchange(g, "#a", "otherbot", "y") == "loop_guard"
    assert exchange(g, "#b", "otherbot", "x") is None
    # alice may still be answered in #a, and answering her ends otherbot's streak there
    assert exchange(g, "#a", "alice", "hi") is None
    assert exchange(g, "#a", "otherbot", "z") is None


def test_alternating_people_never_meet_the_loop_guard():
    g = gate(FakeClock(), loop_limit=2)
    for i in range(20):
        nick = "alice" if i % 2 else "bob"
        assert exchange(g, "#c", nick, f"line {i}") is None


def test_refused_request_does_not_extend_the_streak():
    clock = FakeClock()
    g = gate(clock, loop_limit=2, cooldown=10.0)
    assert exchange(g, "#c", "otherbot", "a") is None
    assert exchange(g, "#c", "otherbot", "b") == "cooldown"
    clock.advance(10.0)
    assert exchange(g, "#c", "otherbot", "c") is None  # second admitted reply, not third


# --- ReplyGate: repeated lines ----------------------------------------------------------------


def test_repeated_line_within_window_is_not_fresh():
    clock = FakeClock()
    g = gate(clock, repeat_window=60.0)
    assert g.heard("#c", "alice", "relaybot: hi")
    clock.advance(30.0)
    assert not g.heard("#c", "alice", "relaybot: hi")
    assert not g.heard("#c", "alice", "  RELAYBOT:   hi ")  # spacing and case do not matter


def test_repeated_line_after_window_is_fresh():
    clock = FakeClock()
    g = gate(clock, repeat_window=60.0)
    assert g.heard("#c", "alice", "ping")
    clock.advance(61.0)
    assert g.heard("#c", "alice", "ping")


def test_same_line_from_another_nick_or_conversation_is_fresh():
    g = gate(FakeClock())
    assert g.heard("#c", "alice", "ping")
    assert g.heard("#c", "bob", "ping")
    assert g.heard("#other", "alice", "ping")
    assert g.heard("#c", "alice", "pong")


# --- ReplyGate: bookkeeping -------------------------------------------------------------------


def test_forget_clears_a_conversation():
    g = gate(FakeClock(), cooldown=60.0, loop_limit=1, channel_burst=1)
    exchange(g, "#c", "alice", "ping")
    assert g.admit("#c", "alice") is not None
    g.forget("#c")
    assert g.heard("#c", "alice", "ping")  # repeat memory gone
    assert g.admit("#c", "alice") is None  # cooldown, streak and channel budget gone


def test_forget_keeps_user_budgets():
    g = gate(FakeClock(), user_burst=1)
    assert g.admit("#c", "alice") is None
    g.forget("#c")
    assert g.admit("#c", "alice") == "user_budget"


def test_configure_applies_new_limits():
    clock = FakeClock()
    g = gate(clock, cooldown=0.0)
    g.admit("#c", "alice")
    g.configure(dataclasses.replace(OPEN, cooldown=30.0))
    assert g.admit("#c", "bob") == "cooldown"
    g.configure(dataclasses.replace(OPEN, user_burst=1, cooldown=0.0))
    assert g.admit("#c", "carol") is None
    assert g.admit("#c", "carol") == "user_budget"


def test_eviction_keeps_spent_buckets():
    """Forgetting a user whose budget is spent would hand them a fresh one."""
    g = gate(FakeClock(), user_burst=1)
    g.MAX_TRACKED = 3
    assert g.admit("#c", "spender") is None
    for nick in ("idle1", "idle2", "idle3", "idle4"):
        g.refusal("#c", nick)
    assert g.rate_summary()["tracked_users"] <= 4
    assert g.admit("#c", "spender") == "user_budget"


def test_rate_summary_counts():
    g = gate(FakeClock())
    g.admit("#a", "alice")
    g.admit("#b", "bob")
    g.admit("#b", "alice")
    assert g.rate_summary() == {"tracked_users": 2, "tracked_conversations": 2}
