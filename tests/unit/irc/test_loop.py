"""relaybot.irc.loop without a connection: timers, handed-over work and stages, each guarded."""

from __future__ import annotations

from typing import Any

import irc.client

from relaybot.irc.loop import Loop


class Log:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def exception(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))


def test_timers_completions_and_stages_run_in_order_and_faults_are_logged() -> None:
    now = [100.0]
    log = Log()
    ran: list[str] = []

    def stage(at: float) -> None:
        ran.append(f"stage {at}")

    def broken_stage(at: float) -> None:
        raise RuntimeError("stage")

    def fail() -> None:
        raise RuntimeError("boom")

    loop = Loop(irc.client.Reactor(), lambda: now[0], log, (broken_stage, stage))
    try:
        loop.schedule(5.0, lambda: ran.append("timer"))
        loop.schedule(1.0, fail)
        loop.call_soon(fail)
        loop.call_soon(lambda: ran.append("soon"))
        loop.step(0.0)
        assert ran == ["soon", "stage 100.0"]
        now[0] = 101.0
        loop.step(0.0)  # the 1 s timer fails; the 5 s one waits
        assert ran[-1] == "stage 101.0" and "timer" not in ran
        now[0] = 105.0
        loop.step(0.0)
        assert ran[-2:] == ["timer", "stage 105.0"]
        loop.step(0.0)  # a timer runs once
        assert ran.count("timer") == 1
        events = [event for event, _ in log.errors]
        assert events.count("completion_handler_failed") == 1
        assert events.count("timer_failed") == 1
        assert log.errors[-1] == ("reactor_error", {"stage": "broken_stage"})
    finally:
        loop.close()


def test_stop_is_seen_and_survives_a_closed_wake_pipe() -> None:
    loop = Loop(irc.client.Reactor(), lambda: 0.0, Log(), ())
    loop.close()
    loop.stop()  # never raises, even when the pipe is gone
    loop.call_soon(lambda: None)
    assert loop.stopping.is_set()
