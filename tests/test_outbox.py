"""Unit tests for relaybot.outbox: a non-blocking token bucket driven by a fake clock."""

from __future__ import annotations

from relaybot.outbox import Outbox, Outgoing


def fill(outbox: Outbox, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        assert outbox.push(Outgoing(f"PRIVMSG #c :{i}"))


def lines(items: list[Outgoing]) -> list[str]:
    return [item.line for item in items]


def test_burst_then_paced():
    outbox = Outbox(burst=4, interval=1.0)
    fill(outbox, 10)
    assert lines(outbox.due(100.0)) == [f"PRIVMSG #c :{i}" for i in range(4)]
    assert len(outbox) == 6
    assert outbox.due(100.0) == []
    assert outbox.due(100.5) == []
    assert lines(outbox.due(101.0)) == ["PRIVMSG #c :4"]
    assert outbox.due(101.9) == []  # 0.9 of a token saved up
    assert lines(outbox.due(104.0)) == ["PRIVMSG #c :5", "PRIVMSG #c :6", "PRIVMSG #c :7"]
    assert len(outbox) == 2


def test_fractional_time_accumulates():
    outbox = Outbox(burst=1, interval=2.0)
    fill(outbox, 3)
    assert len(outbox.due(0.0)) == 1
    assert outbox.due(0.5) == []
    assert outbox.due(1.0) == []
    assert outbox.due(1.5) == []
    assert len(outbox.due(2.0)) == 1


def test_tokens_refill_only_up_to_burst():
    outbox = Outbox(burst=3, interval=1.0)
    assert outbox.due(0.0) == []
    fill(outbox, 10)
    # a long idle period gives at most a full burst
    assert len(outbox.due(1000.0)) == 3
    assert outbox.due(1000.0) == []
    assert len(outbox.due(1001.0)) == 1


def test_order_is_fifo_and_callbacks_travel_with_lines():
    called: list[str] = []
    outbox = Outbox(burst=2)
    outbox.push(Outgoing("a", lambda: called.append("a")))
    outbox.push(Outgoing("b"))
    ready = outbox.due(0.0)
    assert lines(ready) == ["a", "b"]
    assert ready[0].on_sent is not None and ready[1].on_sent is None
    ready[0].on_sent()
    assert called == ["a"]


def test_max_queued():
    outbox = Outbox(burst=1, max_queued=3)
    fill(outbox, 3)
    assert not outbox.push(Outgoing("overflow"))
    assert len(outbox) == 3
    assert lines(outbox.due(0.0)) == ["PRIVMSG #c :0"]
    assert outbox.push(Outgoing("fits again"))
    assert not outbox.push(Outgoing("overflow"))


def test_clear():
    outbox = Outbox(burst=1)
    fill(outbox, 5)
    dropped = outbox.clear()
    assert lines(dropped) == [f"PRIVMSG #c :{i}" for i in range(5)]
    assert len(outbox) == 0
    assert outbox.due(10.0) == []
    assert outbox.clear() == []


def test_empty_queue_spends_no_tokens():
    outbox = Outbox(burst=2, interval=1.0)
    assert outbox.due(0.0) == []
    assert outbox.due(0.1) == []
    fill(outbox, 3)
    assert len(outbox.due(0.2)) == 2
