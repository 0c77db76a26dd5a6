"""Signal handlers run between two bytecodes of the main thread, which may hold any lock at that
moment. The bot's handlers must only hand work to the loop: a handler that logged deadlocked
the bot when SIGTERM arrived while the loop was writing a log line."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

import relaybot.service.bot
from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, RunningServer, joins

pytestmark = pytest.mark.integration


class GuardedLog:
    """Stands for the bot's logger while the test thread "is writing a log line": a call from
    that thread means a handler logged, which would deadlock a real non-reentrant lock."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writer: int | None = None
        self.calls_from_writer: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def guarded(event: str, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self.writer:
                self.calls_from_writer.append(event)
                return None
            return method(event, *args, **kwargs)

        return guarded


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_handlers_only_hand_work_to_the_loop(
    signum: int,
    config_factory: Callable[[str], Config],
    irc_server_factory: Callable[[str], RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = irc_server_factory("miniircd")
    config = config_factory(
        f'[irc]\nhost = "{server.host}"\nport = {server.port}\nnick = "relaybot"\n'
        'channels = ["#sig"]\n'
    )
    guarded = GuardedLog(relaybot.service.bot.log)
    monkeypatch.setattr(relaybot.service.bot, "log", guarded)
    alice = RawClient.connect(server.host, server.port, "alice")
    alice.join("#sig")
    runner = BotRunner(config, FixedEngine("ok"))  # type: ignore[arg-type]
    with capture_logs() as logs, runner:
        alice.wait_for(joins("relaybot", "#sig"), 30)
        guarded.writer = threading.get_ident()  # this thread now "holds the log lock"
        handler = runner.bot._on_signal if signum == signal.SIGTERM else runner.bot._on_hangup
        handler(signum, None)
        guarded.writer = None
        assert guarded.calls_from_writer == []
        name = signal.Signals(signum).name
        runner.wait_until(
            lambda: any(e.get("signal") == name for e in logs), 10, "the loop logs the signal"
        )
        if signum == signal.SIGTERM:
            runner.thread.join(20)
            assert not runner.thread.is_alive(), "SIGTERM did not stop the bot"
        else:
            runner.wait_until(
                lambda: any(e["event"] == "reload" for e in logs), 10, "the loop reloads"
            )
    alice.close()
