"""Persisted state across a real restart: a bot process is killed (SIGKILL, no goodbye) and
started again, and its channels, mutes, persona, settings, ignores and context come back."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.ircservers import RawClient, RunningServer, joins, notice_to, parse_line
from tests.support.processes import bot_process, log_events

pytestmark = pytest.mark.integration


def test_state_and_context_survive_kill_and_restart(
    tmp_path: Path,
    irc_server_factory: Callable[[str], RunningServer],
    real_engine: object,  # warms the converted-model cache so each start takes seconds
) -> None:
    server = irc_server_factory("ngircd")
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[irc]
network = "local"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#home"]
[model]
name = "embedded"
max_new_tokens = 16
[operators]
hostmasks = ["*!*oper@127.0.0.1"]
[state]
dir = "state"
flush_interval = 0.3
[log]
format = "json"
""")
    log_path = tmp_path / "bot.log"
    oper = RawClient.connect(server.host, server.port, "oper")
    oper.join("#home")
    oper.join("#extra")
    with bot_process(config, log_path) as first:
        oper.wait_for(joins("relaybot", "#home"), 120)
        oper.privmsg("#home", "!relay join #extra")
        oper.wait_for(joins("relaybot", "#extra"), 20)
        for command, answer in (
            ("mute 2h", "muted in #home"),
            ("cast a lighthouse keeper", "persona set in #home"),
            ("set temperature 0.7", "temperature in #home is now 0.7"),
            ("ignore *!*@spam.example", "ignoring *!*@spam.example"),
        ):
            oper.privmsg("#home", f"!relay {command}")
            oper.wait_for(notice_to("oper", answer), 20)
        oper.privmsg("#home", "the secret word is pineapple")
        oper.privmsg("#home", "!relay status")  # answered after the line above is recorded
        oper.wait_for(notice_to("oper", "model "), 20)
        state_dir = tmp_path / "state" / "local"
        deadline_context = state_dir / "contexts"
        _wait_for_file_text(deadline_context, "pineapple")
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL

    with bot_process(config, log_path) as second:
        oper.wait_for(joins("relaybot", "#home"), 120)
        oper.wait_for(joins("relaybot", "#extra"), 20)
        oper.privmsg("#home", "!relay status")
        status = parse_line(oper.wait_for(notice_to("oper", "model "), 20))[2][-1]
        assert "#home (muted 1h" in status and "#extra" in status
        oper.privmsg("#home", "!relay unignore *!*@spam.example")
        oper.wait_for(notice_to("oper", "no longer ignoring *!*@spam.example"), 20)
        oper.privmsg("#home", "!relay export")
        exported = parse_line(oper.wait_for(notice_to("oper", "exported #home to "), 20))[2][-1]
        export_text = Path(exported.split(" to ", 1)[1]).read_text()
        rows = [json.loads(line) for line in export_text.splitlines()]
        assert {"role": "oper", "content": "the secret word is pineapple"} in rows
        assert {"role": "system", "content": "* relaybot's bio: a lighthouse keeper"} in rows
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    oper.close()
    runtime = (tmp_path / "state" / "local" / "state.toml").read_text()
    assert "temperature = 0.7" in runtime
    events = log_events(log_path)
    restored = [event for event in events if event["event"] == "state_restored"]
    assert len(restored) == 1 and restored[0]["joined"] == ["#extra"]


def _wait_for_file_text(directory: Path, text: str, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if directory.is_dir() and any(
            text in path.read_text(errors="replace") for path in directory.glob("*.toml")
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} was not saved under {directory} within {timeout} s")


def test_a_corrupt_state_file_is_moved_aside_and_sighup_reloads(
    tmp_path: Path,
    irc_server_factory: Callable[[str], RunningServer],
    real_engine: object,
) -> None:
    server = irc_server_factory("miniircd")
    state_dir = tmp_path / "state" / "local"
    state_dir.mkdir(parents=True)
    (state_dir / "state.toml").write_text('version = 1\njoined = "not a list\n')
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[irc]
network = "local"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#home"]
[model]
name = "embedded"
[state]
dir = "state"
[log]
format = "json"
""")
    log_path = tmp_path / "bot.log"
    alice = RawClient.connect(server.host, server.port, "alice")
    alice.join("#home")
    alice.join("#more")
    with bot_process(config, log_path) as process:
        alice.wait_for(joins("relaybot", "#home"), 120)
        config.write_text(config.read_text().replace('["#home"]', '["#home", "#more"]'))
        process.send_signal(signal.SIGHUP)  # what `systemctl reload` sends
        alice.wait_for(joins("relaybot", "#more"), 20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    alice.close()
    moved = list(state_dir.glob("state.toml.corrupt-*"))
    assert len(moved) == 1 and "not a list" in moved[0].read_text()
    events = log_events(log_path)
    corrupt = next(event for event in events if event["event"] == "state_file_corrupt")
    assert corrupt["moved_to"] == str(moved[0]) and corrupt["problem"]
