"""The loop is woken by work handed over from other threads (completions, stop), instead of
sleeping out its select timeout first."""

from __future__ import annotations

import threading
import time

from relaybot.config.schema import IrcConfig
from relaybot.irc.session import IrcSession


def _session() -> IrcSession:
    return IrcSession(
        IrcConfig(host="127.0.0.1", nick="bot"), on_event=lambda e: None, on_forget=lambda n: None
    )


def test_call_soon_from_another_thread_ends_the_wait_at_once() -> None:
    session = _session()
    ran = threading.Event()
    timer = threading.Timer(0.2, lambda: session.call_soon(ran.set))
    timer.start()
    started = time.monotonic()
    session.step(30.0)  # would sleep 30 s if nothing woke it
    elapsed = time.monotonic() - started
    timer.join()
    assert ran.is_set()
    assert elapsed < 15.0, f"the loop slept {elapsed:.1f} s despite the hand-over"


def test_many_wake_ups_never_block_the_caller() -> None:
    session = _session()
    calls: list[int] = []
    for index in range(100_000):  # far more than a socket buffer holds
        session.call_soon(lambda index=index: calls.append(index))
    session.step(0.0)
    assert calls == list(range(100_000))


def test_stop_wakes_the_loop() -> None:
    session = _session()
    threading.Timer(0.2, session.stop).start()
    started = time.monotonic()
    session.step(30.0)
    assert time.monotonic() - started < 15.0
