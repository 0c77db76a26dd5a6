"""Connection faults with real processes: the server is killed mid-conversation and started
again, and a server that stops answering is detected by the bot's own PING."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, free_port, parse_line, start_server
from tests.support.scripted import ScriptedServer

pytestmark = pytest.mark.integration


def test_server_killed_and_restarted_bot_rejoins_with_context(
    config_factory: Callable[[str], Config], tmp_path: Path
) -> None:
    port = free_port()
    server = start_server("ngircd", tmp_path / "first", port=port)
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "relaybot"
channels = ["#one"]
reconnect_min = 0.5
reconnect_max = 2.0
[policy]
cooldown = 0.0
[operators]
hostmasks = ["*!*oper@127.0.0.1"]
""")
    try:
        with BotRunner(config, FixedEngine("still here")) as runner:  # type: ignore[arg-type]
            runner.wait_until(lambda: runner.turns("#one") is not None, 20, "the bot in #one")
            oper = RawClient.connect("127.0.0.1", port, "oper")
            oper.join("#two")
            oper.privmsg("relaybot", "!relay join #two")  # a channel joined by command
            runner.wait_until(lambda: runner.turns("#two") is not None, 20, "the bot in #two")
            oper.join("#one")
            oper.privmsg("#one", "remember the word pineapple")
            runner.wait_for_turn("#one", "remember the word pineapple")
            server.stop()  # the server dies mid-conversation
            runner.wait_until(
                lambda: not runner.on_reactor(lambda: runner.net.session.registered),
                10,
                "the bot to notice",
            )
            server = start_server("ngircd", tmp_path / "second", port=port)
            runner.wait_until(
                lambda: (
                    sorted(runner.on_reactor(runner.net.session.joined_channels))
                    == ["#one", "#two"]
                ),
                30,
                "the bot to rejoin both channels",
            )
            assert runner.on_reactor(lambda: runner.net.session.connects) == 2
            runner.wait_for_turn("#one", "remember the word pineapple", timeout=1)
            alice = RawClient.connect("127.0.0.1", port, "alice")
            alice.join("#one")
            alice.privmsg("#one", "relaybot: are you back?")
            line = alice.wait_for(lambda x: parse_line(x)[:2] == ("relaybot", "PRIVMSG"), 20)
            assert parse_line(line)[2] == ["#one", "still here"]
            alice.close()
    finally:
        server.stop()


def test_unanswered_ping_leads_to_reconnect(
    config_factory: Callable[[str], Config],
) -> None:
    server = ScriptedServer()
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {server.port}
nick = "relaybot"
channels = ["#relay"]
ping_interval = 5
ping_timeout = 5
reconnect_min = 0.5
""")
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine("still here")):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"USER ", 10)
        server.send(b":irc.test 001 relaybot :Welcome\r\n")
        server.wait_for(b"JOIN #relay", 10)
        started = time.monotonic()
        server.wait_for(b"PING :relaybot-", 10)  # after 5 s of silence the bot asks
        first = server.conn
        # ... and gets no answer: within ping_timeout it gives up and connects again.
        server.accept(timeout=15)
        elapsed = time.monotonic() - started
        assert server.conn is not first
        assert 8 <= elapsed <= 15, elapsed
        server.wait_for(b"CAP LS 302", 10)
    server.close()
    assert any(e["event"] == "ping_timeout" for e in logs)
