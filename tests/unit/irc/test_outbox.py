"""Unit tests for relaybot.irc.outbox: pacing, per-byte cost, the order of targets, and the
freshness of batches (deadlines, supersession, the wait estimate) on a fake clock."""

from __future__ import annotations

import itertools
import random

import pytest

from relaybot.irc.outbox import (
    DEFAULT_BURST,
    DEFAULT_BYTES_PER_SECOND,
    DEFAULT_INTERVAL,
    MAX_LINE_BYTES,
    Batch,
    Outbox,
    Outgoing,
)

# With this bytes_per_second the byte cost of a line is far below a microsecond,
# so each line costs `interval` seconds.
FREE_BYTES = 10**9


def fill(outbox: Outbox, count: int, target: str = "#c", start: int = 0) -> None:
    for i in range(start, start + count):
        assert outbox.push(Outgoing(f"PRIVMSG {target} :{i}", target=target))


def lines(items: list[Outgoing]) -> list[str]:
    return [item.line for item in items]


def sized(size: int, target: str = "#c") -> Outgoing:
    """A line of exactly `size` bytes on the wire (CRLF included)."""
    head = f"PRIVMSG {target} :"
    return Outgoing(head + "x" * (size - 2 - len(head)), target=target)


def drain_times(outbox: Outbox, start: float, until: float, step: float = 0.05) -> list[float]:
    """Drive due() on a 50 ms tick like the reactor; return when each line went out."""
    sent: list[float] = []
    for tick in range(round((until - start) / step) + 1):
        now = start + tick * step
        sent.extend(now for _ in outbox.due(now))
    return sent


def test_defaults_are_the_measured_ones():
    outbox = Outbox()
    assert (outbox.burst, outbox.interval, outbox.bytes_per_second) == (
        DEFAULT_BURST, DEFAULT_INTERVAL, DEFAULT_BYTES_PER_SECOND
    )  # fmt: skip
    # InspIRCd's default fakelag admits 1 line/s: even the shortest line must cost more.
    assert outbox.cost("PRIVMSG #c :x") >= 1.05
    # Its default recvq is 4096 bytes: a burst of maximal lines must fit well inside,
    # and no more than `burst` maximal lines go out at once.
    assert outbox.burst * MAX_LINE_BYTES <= 4096 * 0.75
    for _ in range(20):
        outbox.push(sized(MAX_LINE_BYTES))
    assert len(outbox.due(0.0)) == DEFAULT_BURST


def fakelag_peak(outbox: Outbox, tick_phase: float) -> int:
    """Drain `outbox` into a model of InspIRCd's default fakelag; return the peak penalty.

    The server adds 1 per line, takes 1 off on its 1 s tick and stops reading the
    client once the penalty reaches 10 (threshold="10" commandrate="1000"); lines it
    cannot process then wait in a 4096-byte recvq whose overflow kills the client.
    """
    penalty = peak = 0
    next_tick = tick_phase
    for turn in range(20 * 60 * 10):
        now = turn * 0.05
        while next_tick <= now:
            penalty, next_tick = max(0, penalty - 1), next_tick + 1.0
        penalty += len(outbox.due(now))
        peak = max(peak, penalty)
        if not len(outbox):
            return peak
    raise AssertionError("the outbox did not drain in 10 minutes")


@pytest.mark.parametrize("size", [15, 60, 200, 400, MAX_LINE_BYTES])
@pytest.mark.parametrize("tick_phase", [0.01, 0.5, 0.99])
def test_defaults_stay_clear_of_inspircd_fakelag(size: int, tick_phase: float):
    outbox = Outbox()
    for _ in range(200):
        assert outbox.push(sized(size))
    # Room for at least 3 more commands (registration, JOINs, PONGs that bypass the
    # outbox) before the server would have to queue anything.
    assert fakelag_peak(outbox, tick_phase) + 3 < 10


def test_burst_then_paced():
    outbox = Outbox(burst=4, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 10)
    assert lines(outbox.due(100.0)) == [f"PRIVMSG #c :{i}" for i in range(4)]
    assert len(outbox) == 6
    assert outbox.due(100.0) == []
    assert outbox.due(100.5) == []
    assert lines(outbox.due(101.0)) == ["PRIVMSG #c :4"]
    assert outbox.due(101.9) == []  # 0.9 s of the next line paid off
    assert lines(outbox.due(104.0)) == ["PRIVMSG #c :5", "PRIVMSG #c :6", "PRIVMSG #c :7"]
    assert len(outbox) == 2


def test_sustained_rate_is_one_line_per_cost():
    outbox = Outbox(burst=3, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 23)
    sent = drain_times(outbox, 0.0, 30.0)
    assert len(sent) == 23
    assert sent[:3] == [0.0, 0.0, 0.0]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(sent[3:])]
    assert all(gap == pytest.approx(1.0, abs=0.051) for gap in gaps), gaps
    assert sent[-1] == pytest.approx(20.0, abs=0.06)  # 3 at once, then 20 more at 1/s


def test_fractional_time_accumulates():
    outbox = Outbox(burst=1, interval=2.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 3)
    assert len(outbox.due(0.0)) == 1
    assert outbox.due(0.5) == []
    assert outbox.due(1.0) == []
    assert outbox.due(1.9) == []
    assert len(outbox.due(2.0)) == 1


def test_idle_time_refills_only_one_burst():
    outbox = Outbox(burst=3, interval=1.0, bytes_per_second=FREE_BYTES)
    assert outbox.due(0.0) == []
    fill(outbox, 10)
    assert len(outbox.due(1000.0)) == 3  # a long idle period gives at most a full burst
    assert outbox.due(1000.0) == []
    assert len(outbox.due(1001.0)) == 1


def test_cost_counts_wire_bytes():
    outbox = Outbox(interval=1.0, bytes_per_second=100)
    assert outbox.cost("x" * 98) == pytest.approx(2.0)  # 98 + CRLF = 100 bytes
    assert outbox.cost("é" * 49) == pytest.approx(2.0)  # UTF-8: two bytes each
    assert outbox.cost("") == pytest.approx(1.02)


def test_long_lines_wait_longer_than_short_ones():
    def gaps(size: int) -> list[float]:
        outbox = Outbox(burst=1, interval=1.0, bytes_per_second=100)
        for _ in range(4):
            outbox.push(sized(size))
        sent = drain_times(outbox, 0.0, 20.0)
        assert len(sent) == 4
        return [round(b - a, 2) for a, b in itertools.pairwise(sent)]

    assert gaps(50) == [1.5, 1.5, 1.5]  # 1 s + 50 B at 100 B/s
    assert gaps(400) == [5.0, 5.0, 5.0]  # 1 s + 400 B at 100 B/s


def test_burst_counts_longest_lines_and_short_ones_fit_more():
    # allowance: room for burst - 1 = 2 lines of 512 bytes: 2 * (1 + 5.12) = 12.24 s
    outbox = Outbox(burst=3, interval=1.0, bytes_per_second=100)
    for _ in range(20):
        outbox.push(sized(MAX_LINE_BYTES))  # costs 6.12 s: debt 0, 6.12, 12.24 -> 3 lines
    assert len(outbox.due(0.0)) == 3
    assert outbox.due(6.0) == []  # debt 18.36 - 6.0 = 12.36: still over the allowance
    assert len(outbox.due(6.2)) == 1
    outbox.clear()
    for _ in range(20):
        outbox.push(sized(400))  # costs 5 s: debt 0, 5, 10 -> 3 lines
    assert len(outbox.due(100.0)) == 3
    outbox.clear()
    for _ in range(20):
        outbox.push(sized(20))  # costs 1.2 s: debt 0, 1.2, ..., 12.0 -> 11 lines
    assert len(outbox.due(200.0)) == 11


def test_interval_zero_paces_by_bytes_alone():
    outbox = Outbox(burst=1, interval=0.0, bytes_per_second=100)
    for _ in range(3):
        outbox.push(sized(50))
    assert len(outbox.due(0.0)) == 1
    assert outbox.due(0.4) == []
    assert len(outbox.due(0.5)) == 1


def test_a_quiet_target_goes_before_a_busy_one():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 200, "#busy")
    assert lines(outbox.due(0.0)) == ["PRIVMSG #busy :0"]
    assert outbox.push(Outgoing("PRIVMSG #quiet :hello", target="#quiet"))
    assert outbox.push(Outgoing("PRIVMSG nick :psst", target="nick"))
    sent = [lines(outbox.due(float(t))) for t in range(1, 5)]
    assert sent == [
        ["PRIVMSG #quiet :hello"],  # never served: before #busy's 199 others
        ["PRIVMSG nick :psst"],
        ["PRIVMSG #busy :1"],
        ["PRIVMSG #busy :2"],
    ]
    assert outbox.pending("#busy") == 197
    assert outbox.pending("#quiet") == 0 and outbox.pending("nick") == 0


def test_a_target_quiet_for_a_while_goes_before_busy_ones():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 1, "#early")
    assert lines(outbox.due(0.0)) == ["PRIVMSG #early :0"]
    fill(outbox, 50, "#a")
    fill(outbox, 50, "#b")
    sent = [line for t in range(1, 7) for line in lines(outbox.due(float(t)))]
    assert sent == ["PRIVMSG #a :0", "PRIVMSG #b :0"] * 1 + [
        "PRIVMSG #a :1", "PRIVMSG #b :1", "PRIVMSG #a :2", "PRIVMSG #b :2",
    ]  # fmt: skip
    fill(outbox, 1, "#early", start=1)  # served 7 lines ago, the busy ones 1 and 2 ago
    assert lines(outbox.due(7.0)) == ["PRIVMSG #early :1"]
    assert lines(outbox.due(8.0)) == ["PRIVMSG #a :3"]


def test_interleaves_targets_and_keeps_order_within_each():
    outbox = Outbox(burst=100, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 5, "#a")
    fill(outbox, 2, "#b")
    fill(outbox, 3, "")
    assert lines(outbox.due(0.0)) == [
        "PRIVMSG #a :0", "PRIVMSG #b :0", "PRIVMSG  :0",
        "PRIVMSG #a :1", "PRIVMSG #b :1", "PRIVMSG  :1",
        "PRIVMSG #a :2", "PRIVMSG  :2",
        "PRIVMSG #a :3", "PRIVMSG #a :4",
    ]  # fmt: skip
    assert len(outbox) == 0


def test_a_target_that_empties_rejoins_at_the_back():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 3, "#a")
    fill(outbox, 1, "#b")
    assert lines(outbox.due(0.0)) == ["PRIVMSG #a :0"]
    assert lines(outbox.due(1.0)) == ["PRIVMSG #b :0"]
    fill(outbox, 1, "#b", start=1)  # #b is new again: behind #a
    assert lines(outbox.due(2.0)) == ["PRIVMSG #a :1"]
    assert lines(outbox.due(3.0)) == ["PRIVMSG #b :1"]
    assert lines(outbox.due(4.0)) == ["PRIVMSG #a :2"]


def test_callbacks_travel_with_lines():
    called: list[str] = []
    outbox = Outbox(burst=2, interval=1.0)
    outbox.push(Outgoing("a", lambda: called.append("a")))
    outbox.push(Outgoing("b"))
    ready = outbox.due(0.0)
    assert lines(ready) == ["a", "b"]
    assert ready[0].on_sent is not None and ready[1].on_sent is None
    ready[0].on_sent()
    assert called == ["a"]


def test_outgoing_is_frozen_and_slotted():
    item = Outgoing("PRIVMSG #c :x", target="#c")
    assert item.target == "#c" and item.on_sent is None
    assert Outgoing("x").target == ""
    with pytest.raises(AttributeError):
        item.line = "other"  # type: ignore[misc]
    assert not hasattr(item, "__dict__")


def test_max_queued_counts_all_targets():
    outbox = Outbox(burst=1, max_queued=3)
    fill(outbox, 2, "#a")
    fill(outbox, 1, "#b")
    assert not outbox.push(Outgoing("overflow", target="#c"))
    assert not outbox.push(Outgoing("overflow", target="#a"))
    assert len(outbox) == 3 and outbox.pending("#c") == 0
    assert lines(outbox.due(0.0)) == ["PRIVMSG #a :0"]
    assert outbox.push(Outgoing("fits again", target="#c"))
    assert not outbox.push(Outgoing("overflow", target="#c"))
    assert outbox.pending("#c") == 1


def test_drop_target():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 3, "#a")
    fill(outbox, 2, "#b")
    fill(outbox, 2, "#c")
    dropped = outbox.drop_target("#b")
    assert lines(dropped) == ["PRIVMSG #b :0", "PRIVMSG #b :1"]
    assert len(outbox) == 5 and outbox.pending("#b") == 0
    assert outbox.drop_target("#b") == []
    assert outbox.drop_target("#nowhere") == []
    sent = [item for t in range(5) for item in outbox.due(float(t))]
    assert lines(sent) == [
        "PRIVMSG #a :0", "PRIVMSG #c :0", "PRIVMSG #a :1", "PRIVMSG #c :1", "PRIVMSG #a :2",
    ]  # fmt: skip
    assert len(outbox) == 0
    fill(outbox, 1, "#b")  # a dropped target can queue again
    assert lines(outbox.due(10.0)) == ["PRIVMSG #b :0"]


def test_clear():
    outbox = Outbox(burst=1)
    fill(outbox, 3, "#a")
    fill(outbox, 1, "#b")
    dropped = outbox.clear()
    assert lines(dropped) == ["PRIVMSG #a :0", "PRIVMSG #b :0", "PRIVMSG #a :1", "PRIVMSG #a :2"]
    assert len(outbox) == 0 and outbox.pending("#a") == 0
    assert outbox.due(10.0) == []
    assert outbox.clear() == []
    fill(outbox, 1, "#a")
    assert lines(outbox.due(20.0)) == ["PRIVMSG #a :0"]


def test_empty_queue_spends_nothing():
    outbox = Outbox(burst=2, interval=1.0, bytes_per_second=FREE_BYTES)
    assert outbox.due(0.0) == []
    assert outbox.due(0.1) == []
    fill(outbox, 3)
    assert len(outbox.due(0.2)) == 2


def test_clock_going_backwards_does_not_refill():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    fill(outbox, 3)
    assert len(outbox.due(10.0)) == 1
    assert outbox.due(5.0) == []
    assert outbox.due(10.5) == []
    assert len(outbox.due(11.0)) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"burst": 0}, {"interval": -1.0}, {"bytes_per_second": 0}, {"max_queued": 0}],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]):
    with pytest.raises(ValueError):
        Outbox(**kwargs)  # type: ignore[arg-type]


# --- batches: deadlines and supersession --------------------------------------------------


def reply(outbox: Outbox, target: str, texts: list[str], batch: Batch) -> None:
    for text in texts:
        assert outbox.push(Outgoing(f"PRIVMSG {target} :{text}", target=target, batch=batch))


def test_a_batch_that_has_not_started_by_its_deadline_is_dropped_whole():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    reasons: list[str] = []
    fill(outbox, 3, "#busy")
    late = Batch(deadline=0.5, on_dropped=reasons.append)
    reply(outbox, "#busy", ["late 1", "late 2"], late)
    sent = [line for t in range(6) for line in lines(outbox.due(float(t)))]
    assert sent == ["PRIVMSG #busy :0", "PRIVMSG #busy :1", "PRIVMSG #busy :2"]
    assert reasons == ["stale"] and late.dropped and not late.started
    assert len(outbox) == 0


def test_a_stale_batch_leaves_the_queue_before_its_turn():
    outbox = Outbox(burst=1, interval=10.0, bytes_per_second=FREE_BYTES)
    reasons: list[str] = []
    fill(outbox, 2, "#busy")
    reply(outbox, "#other", ["a", "b", "c"], Batch(deadline=3.0, on_dropped=reasons.append))
    assert lines(outbox.due(0.0)) == ["PRIVMSG #busy :0"]
    assert outbox.due(4.0) == []  # paced: nothing may go, but the stale lines are gone
    assert reasons == ["stale"] and len(outbox) == 1


def test_a_batch_that_started_in_time_finishes_after_its_deadline():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    reasons: list[str] = []
    batch = Batch(deadline=0.5, on_dropped=reasons.append)
    reply(outbox, "#c", ["one", "two", "three"], batch)
    sent = [line for t in range(4) for line in lines(outbox.due(float(t)))]
    assert sent == ["PRIVMSG #c :one", "PRIVMSG #c :two", "PRIVMSG #c :three"]
    assert batch.started and reasons == []


def test_a_newer_batch_supersedes_an_unstarted_older_one_for_the_same_target():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    reasons: list[tuple[str, str]] = []
    fill(outbox, 1, "#c")
    older = Batch(key="reply", on_dropped=lambda why: reasons.append(("older", why)))
    other_kind = Batch(key="ask")
    elsewhere = Batch(key="reply")
    reply(outbox, "#c", ["old 1", "old 2"], older)
    reply(outbox, "#c", ["an answer"], other_kind)
    reply(outbox, "#d", ["elsewhere"], elsewhere)
    reply(outbox, "#c", ["new"], Batch(key="reply"))
    assert reasons == [("older", "superseded")] and older.dropped
    sent = [line for t in range(5) for line in lines(outbox.due(float(t)))]
    assert sent == [
        "PRIVMSG #c :0", "PRIVMSG #d :elsewhere", "PRIVMSG #c :an answer", "PRIVMSG #c :new",
    ]  # fmt: skip


def test_a_started_batch_is_not_superseded():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    reasons: list[str] = []
    older = Batch(key="reply", on_dropped=reasons.append)
    reply(outbox, "#c", ["old 1", "old 2"], older)
    assert lines(outbox.due(0.0)) == ["PRIVMSG #c :old 1"]
    reply(outbox, "#c", ["new"], Batch(key="reply"))
    sent = [line for t in range(1, 3) for line in lines(outbox.due(float(t)))]
    assert sent == ["PRIVMSG #c :old 2", "PRIVMSG #c :new"] and reasons == []


def test_without_a_key_nothing_is_superseded():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    reply(outbox, "#c", ["first"], Batch())
    reply(outbox, "#c", ["second"], Batch())
    assert len(outbox) == 2


def test_oldest_request_is_the_oldest_queued_batch():
    outbox = Outbox(burst=1, interval=1.0, bytes_per_second=FREE_BYTES)
    assert outbox.oldest_request() is None
    fill(outbox, 1, "#c")
    reply(outbox, "#c", ["b"], Batch(requested=7.0))
    reply(outbox, "#d", ["a"], Batch(requested=3.0))
    assert outbox.oldest_request() == 3.0


# --- the wait estimate -----------------------------------------------------------------------


def test_wait_is_zero_on_an_idle_link_and_grows_with_the_queue_ahead():
    outbox = Outbox(burst=2, interval=1.0, bytes_per_second=FREE_BYTES)
    assert outbox.wait("#c", 0.0) == 0.0
    fill(outbox, 5, "#c")
    # Five of its own ahead; the burst lets two go at once, then one a second.
    assert outbox.wait("#c", 0.0) == pytest.approx(4.0)
    assert outbox.wait("#quiet", 0.0) == pytest.approx(0.0)  # goes first: never served


@pytest.mark.parametrize("seed", range(20))
def test_wait_matches_when_the_line_actually_goes(seed: int):
    rng = random.Random(seed)
    outbox = Outbox(burst=3, interval=1.0, bytes_per_second=500)
    targets = ["#a", "#b", "#c", "#d"]
    for _ in range(rng.randrange(0, 30)):
        target = rng.choice(targets)
        outbox.push(Outgoing(f"PRIVMSG {target} :" + "x" * rng.randrange(1, 300), target=target))
    outbox.due(0.0)
    for _ in range(rng.randrange(0, 10)):  # some have been served: ranks differ
        target = rng.choice(targets)
        outbox.push(Outgoing(f"PRIVMSG {target} :y", target=target))
    now = 0.37
    target = rng.choice([*targets, "#new"])
    expected = outbox.wait(target, now)
    probe = Outgoing(f"PRIVMSG {target} :probe", target=target)
    outbox.push(probe)
    went = None
    t = now
    while went is None and t < now + 500:
        if probe in outbox.due(t):
            went = t
        t += 0.01
    assert went is not None
    assert went - now == pytest.approx(expected, abs=0.02)
