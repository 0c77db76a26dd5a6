"""Unit tests for relaybot.bridge.typing through the relay: "active" when a reply starts
generating and every REFRESH s while it runs, "done" only when it ends without a reply."""

from __future__ import annotations

from collections.abc import Callable

from relaybot.bridge.typing import REFRESH
from relaybot.irc.events import Join, Names
from tests.support.bridge import ALICE, BOT, Harness, TimersFrom, make_relay


def harness() -> tuple[Harness, list[tuple[float, Callable[[], None]]]]:
    scheduled: list[tuple[float, Callable[[], None]]] = []
    h = make_relay(timers=TimersFrom(lambda delay, fn: scheduled.append((delay, fn))))
    h.relay.handle(Join(BOT, "#chan"))
    h.relay.handle(Names("#chan", ("relaybot", "alice")))
    return h, scheduled


def run_timers(scheduled: list[tuple[float, Callable[[], None]]]) -> None:
    due, scheduled[:] = list(scheduled), []
    for _, fn in due:
        fn()


def test_active_while_generating_and_no_done_after_a_reply():
    h, scheduled = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    assert h.sender.typed == [("#chan", True)]
    assert [delay for delay, _ in scheduled] == [REFRESH]
    run_timers(scheduled)  # still generating: renewed
    run_timers(scheduled)
    assert h.sender.typed == [("#chan", True)] * 3
    h.complete(h.jobs[0], "hello")
    run_timers(scheduled)  # finished: the refresh stops
    assert h.sender.typed == [("#chan", True)] * 3  # the reply itself ends it
    assert scheduled == []


def test_done_when_the_generation_ends_without_a_reply():
    h, _ = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], None, error="engine failed")
    assert h.sender.typed == [("#chan", True), ("#chan", False)]


def test_done_when_moderation_or_cleanup_leaves_nothing_to_say():
    h, _ = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "/quit bye")  # a command-looking line: dropped, nothing sent
    assert h.sender.sent == []
    assert h.sender.typed == [("#chan", True), ("#chan", False)]


def test_a_cancelled_generation_stops_refreshing():
    h, scheduled = harness()
    h.say(ALICE, "#chan", "relaybot: hi")
    h.relay.forget("#chan")  # parted: the job is cancelled
    run_timers(scheduled)
    assert h.sender.typed == [("#chan", True)] and scheduled == []


def test_one_timer_renews_every_generation_in_progress():
    h, scheduled = harness()
    for channel in ("#a", "#b", "#c"):
        h.relay.handle(Join(BOT, channel))
        h.say(ALICE, channel, "relaybot: hi")
    assert len(scheduled) == 1  # not one a generation
    h.complete(h.jobs[0], "hello")
    run_timers(scheduled)
    assert h.sender.typed[-2:] == [("#b", True), ("#c", True)]
    assert len(scheduled) == 1
