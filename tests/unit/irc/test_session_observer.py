"""What the session tells its observer, over a real loopback socket: registered when the server
welcomes the bot, not when the link goes, a reconnect each time one is scheduled, and the
outbox's size whenever it is asked."""

from __future__ import annotations

import time
from collections.abc import Callable

from relaybot.config.schema import IrcConfig
from relaybot.irc.session import IrcSession
from tests.support.scripted import ScriptedServer


class Observed:
    def __init__(self) -> None:
        self.states: list[bool] = []
        self.reconnects = 0
        self.lines: Callable[[], int] = lambda: -1

    def registered(self, up: bool) -> None:
        self.states.append(up)

    def reconnecting(self) -> None:
        self.reconnects += 1

    def outbox_lines(self, lines: Callable[[], int]) -> None:
        self.lines = lines


def _step_until(session: IrcSession, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        session.step(0.05)
        if done():
            return
    raise AssertionError(f"timed out waiting for {what}")


def test_the_observer_follows_the_link_and_the_outbox() -> None:
    server = ScriptedServer()
    observed = Observed()
    config = IrcConfig(
        host="127.0.0.1", port=server.port, nick="relaybot", reconnect_min=0.2, reconnect_max=0.5
    )
    session = IrcSession(
        config, on_event=lambda event: None, on_forget=lambda name: None, observer=observed
    )
    try:
        assert observed.lines() == 0
        session._try_connect()
        server.accept()
        server.wait_for(b"USER ", 10)
        assert observed.states == []  # connected, not yet registered
        server.send(b":irc.test 001 relaybot :Welcome\r\n")
        _step_until(session, lambda: session.registered, "registration")
        assert observed.states == [True]

        # More lines than the first burst lets go: the rest wait in the outbox.
        for index in range(8):
            session.send_message("#c", f"line {index}")
        session.step(0.05)
        assert observed.lines() == len(session.outbox) > 0

        assert server.conn is not None
        server.conn.close()
        _step_until(session, lambda: observed.reconnects == 1, "the reconnect")
        assert observed.states == [True, False]
        # The first attempt fails (nothing listens any more): that is a reconnect too.
        server.listener.close()
        _step_until(session, lambda: observed.reconnects == 2, "the second reconnect")
        assert observed.states == [True, False]
    finally:
        session.stop()
        session.loop.close()
        server.close()
