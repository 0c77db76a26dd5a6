"""Delivery bookkeeping: which written lines a PONG confirms, and what a lost link retracts."""

from __future__ import annotations

from relaybot.irc.delivery import Delivery


def test_a_ping_is_due_once_the_oldest_line_has_waited_and_confirms_only_lines_before_it():
    delivery = Delivery(delay=5.0)
    retracted: list[str] = []
    delivery.written(lambda: retracted.append("one"), now=0.0)
    assert delivery.want_ack(4.9) is None
    token = delivery.want_ack(5.0)
    assert token is not None and delivery.want_ack(6.0) is None  # one at a time
    assert delivery.confirm(token) == 0  # queued, not written: confirms nothing yet
    delivery.ack_written()
    assert delivery.awaiting_pong
    delivery.written(lambda: retracted.append("two"), now=5.5)  # after the PING
    assert delivery.confirm("relaybot-ack-999") == 0
    assert delivery.confirm(token) == 1
    assert len(delivery) == 1 and not delivery.awaiting_pong
    for retract in delivery.lost():
        retract()
    assert retracted == ["two"]


def test_a_dropped_ping_is_asked_for_again():
    delivery = Delivery(delay=0.0)
    delivery.written(lambda: None, now=0.0)
    first = delivery.want_ack(1.0)
    delivery.ack_dropped()
    second = delivery.want_ack(1.0)
    assert first is not None and second is not None and second != first


def test_a_lost_link_retracts_newest_first_and_forgets_the_ping():
    delivery = Delivery(delay=0.0)
    order: list[int] = []
    for index in range(3):
        delivery.written(lambda index=index: order.append(index), now=0.0)
    token = delivery.want_ack(1.0, at_once=True)
    delivery.ack_written()
    for retract in delivery.lost():
        retract()
    assert order == [2, 1, 0]
    assert token is not None and delivery.confirm(token) == 0
    assert delivery.want_ack(1.0) is None  # nothing left to confirm
