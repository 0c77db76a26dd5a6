"""Bot loops: two relaybot processes that answer every line must not talk to each other
forever (ngIRCd: no bot mode, so the loop and repeat guards must stop them), and on
InspIRCd the bot marks itself with bot mode and ignores users in bot mode."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import structlog.testing

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, joins, parse_line
from tests.support.processes import bot_process, log_events

pytestmark = pytest.mark.integration
LOOP_LIMIT = 3
QUIET_SECONDS = 25.0


def bot_toml(server: RunningServer, nick: str, state: Path) -> str:
    return f"""
[irc]
network = "local"
host = "{server.host}"
port = {server.port}
nick = "{nick}"
channels = ["#loop"]
[reply]
chance = 1.0
max_lines = 1
[policy]
loop_limit = {LOOP_LIMIT}
cooldown = 0.0
user_burst = 100
channel_burst = 100
[model]
name = "embedded"
max_new_tokens = 16
temperature = 0.8
[state]
dir = "{state}"
[log]
format = "json"
"""


def test_two_bots_answering_everything_stop_talking_to_each_other(
    tmp_path: Path,
    irc_server_factory: Callable[[str], RunningServer],
    real_engine: object,  # warms the converted-model cache
) -> None:
    server = irc_server_factory("ngircd")
    human = RawClient.connect(server.host, server.port, "human")
    human.join("#loop")
    logs = []
    with ExitStack() as stack:
        processes = []
        for nick in ("botone", "bottwo"):
            config = tmp_path / f"{nick}.toml"
            config.write_text(bot_toml(server, nick, tmp_path / f"state-{nick}"))
            log_path = tmp_path / f"{nick}.log"
            logs.append(log_path)
            # Two model processes on a small machine: one thread each, no thrashing.
            env = {"OMP_NUM_THREADS": "1"}
            processes.append(stack.enter_context(bot_process(config, log_path, env)))
        for nick in ("botone", "bottwo"):
            human.wait_for(joins(nick, "#loop"), 120)
        human.privmsg("#loop", "hello bots, what do you think about the weather?")

        bot_lines: list[tuple[float, str]] = []
        deadline = time.monotonic() + 240
        last_activity = time.monotonic()
        while time.monotonic() - last_activity < QUIET_SECONDS:
            assert time.monotonic() < deadline, f"still talking after 240 s: {bot_lines[-5:]}"
            try:
                line = human.wait_for(
                    lambda line: " PRIVMSG #loop " in line and line.startswith(":bot"), 1.0
                )
            except TimeoutError:
                continue
            bot_lines.append((time.monotonic(), line))
            last_activity = time.monotonic()
        # Each bot answers the human once, then the other bot at most LOOP_LIMIT times.
        assert 2 <= len(bot_lines) <= 2 * (1 + LOOP_LIMIT), bot_lines
        for process in processes:
            assert process.poll() is None, "a bot died"
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    human.close()
    declined = [
        event.get("reason")
        for path in logs
        for event in log_events(path)
        if event["event"] in ("reply_declined", "reply_dropped_repeated")
    ]
    # What stopped them: the loop guard, or a repeated line (both are guards against loops).
    assert {"loop_guard", "repeated_line"} & set(declined), declined


def test_bot_mode_is_set_and_bots_are_not_answered(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
    tmp_path: Path,
) -> None:
    server = irc_server_factory("inspircd")
    config = config_factory(bot_toml(server, "relaybot", tmp_path / "state"))
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#loop") is not None, 30, "the bot to join")
        other = RawClient.connect(server.host, server.port, "otherbot")
        other.send("MODE otherbot +B")
        other.wait_for(lambda line: " MODE otherbot " in line and "+B" in line, 10)
        other.send("WHOIS relaybot")
        other.wait_for(lambda line: parse_line(line)[1] == "335", 10)  # RPL_WHOISBOT
        other.send("CAP REQ :message-tags")
        other.join("#loop")
        runner.wait_for_turn("#loop", "* otherbot has joined #loop")
        with structlog.testing.capture_logs() as events:
            other.privmsg("#loop", "relaybot: hello fellow bot")
            runner.wait_for_turn("#loop", "relaybot: hello fellow bot")
            runner.wait_until(
                lambda: any(e.get("reason") == "sender_is_bot" for e in events),
                10,
                "the bot to decline answering a bot",
            )
        assert not any(e["event"] == "reply_requested" for e in events)
        other.close()
