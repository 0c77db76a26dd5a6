"""`relaybot` as a user runs it: a real process, a real server, signals, exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.ircservers import RawClient, RunningServer, joins, privmsg_from
from tests.support.processes import bot_process, log_events

pytestmark = pytest.mark.integration


def relaybot(*args: str, **kwargs: object) -> list[str]:
    return [sys.executable, "-m", "relaybot", *args]


def test_check_config_names_the_key_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bot.toml"
    bad.write_text('[irc]\nhost = "127.0.0.1"\nnick = "relaybot"\nchannels = ["nohash"]\n')
    result = subprocess.run(
        relaybot("check-config", str(bad)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "irc.channels[0]" in result.stderr and "not a valid channel name" in result.stderr
    bad.write_text(
        '[irc]\nhost = "h"\nnick = "n"\n[irc.sasl]\nusername = "n"\n'
        'password_file = "missing-secret"\n'
    )
    result = subprocess.run(
        relaybot("--config", str(bad)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "irc.sasl.password_file" in result.stderr and "cannot read" in result.stderr


def test_run_replies_then_quits_cleanly_on_sigterm(
    tmp_path: Path,
    irc_server_factory: Callable[[str], RunningServer],
    real_engine: object,
) -> None:
    # real_engine: the model cache is warm, so the process loads in seconds.
    server = irc_server_factory("miniircd")
    secret = tmp_path / "sasl-password"
    secret.write_text("hunter2-very-secret\n")
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[irc]
network = "local"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#relay"]
[irc.sasl]
username = "relaybot"
password_file = "sasl-password"
[model]
name = "embedded"
max_new_tokens = 32
[log]
format = "json"
[state]
dir = "state"
""")
    log_path = tmp_path / "bot.log"
    with bot_process(config, log_path) as process:
        alice = RawClient.connect(server.host, server.port, "alice")
        alice.join("#relay")
        alice.wait_for(joins("relaybot", "#relay"), 120)
        alice.privmsg("#relay", "relaybot: hello there!")
        alice.wait_for(privmsg_from("relaybot", "#relay"), 90)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        alice.wait_for(lambda line: line.startswith(":relaybot!") and " QUIT" in line, 10)
        alice.close()
    log_text = log_path.read_text()
    assert "hunter2" not in log_text
    events = log_events(log_path)
    names = [event["event"] for event in events]
    assert {"model_loaded", "registered", "joined", "reply_sent", "stopped"} <= set(names)
    # The memory check and the warm-up batch come before the bot is on IRC at all.
    assert names.index("memory_plan") < names.index("engine_warmed") < names.index("registered")
    sent = next(event for event in events if event["event"] == "reply_sent")
    assert sent["network"] == "local" and sent["channel"] == "#relay" and sent["nick"] == "alice"


def test_caches_that_cannot_fit_refuse_to_start_naming_the_keys(
    tmp_path: Path, real_engine: object
) -> None:
    from relaybot.inference.local.memory import available_memory_bytes

    # 256 sequences of 8,192 tokens at 45 KiB a token: about 90 GiB of decode cache.
    needed = 256 * 8192 * 46080
    available = available_memory_bytes("cpu")
    if available is None or available > needed:
        pytest.skip("this machine has room for the oversized cache")
    config = tmp_path / "bot.toml"
    config.write_text(
        '[irc]\nhost = "127.0.0.1"\nport = 1\nnick = "relaybot"\nchannels = ["#relay"]\n'
        '[model]\nname = "embedded"\ndevice = "cpu"\nmax_batch = 256\ncontext_tokens = 8192\n'
        '[state]\ndir = "state"\n'
    )
    result = subprocess.run(
        relaybot("--config", str(config)), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 3, result.stderr
    message = result.stderr
    assert "cannot load the model" in message
    assert "256 sequences of 8192 tokens" in message
    assert "model.max_batch" in message and "model.context_tokens" in message
    assert "GiB" in message
