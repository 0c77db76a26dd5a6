"""One real `relaybot` process on two real IRC servers at once (InspIRCd and ngIRCd), through
the embedded model, as systemd would run it: it answers on both; replies from both networks
decode in one batch of the one engine; systemd's STATUS names each network; nothing said on one
network enters the other's context, though the channel has the same name on both; an operator
of one network has no rights on the other; `!relay status` is the network's own; killing one
server leaves the other answering; and each network's state is saved in a folder of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.ircservers import RawClient, RunningServer, notice_to, parse_line
from tests.support.notify import NotifyListener

pytestmark = pytest.mark.integration

CHANNEL = "#relay"  # the same name on both networks: their contexts must stay apart
REPLY_TIMEOUT = 90.0
OPERATOR_MASK = "*!*oper@127.0.0.1"
TOPICS = [("the sea", "mountains"), ("rivers", "forests"), ("the moon", "deserts")]


def config_text(alpha: RunningServer, beta: RunningServer, state: Path) -> str:
    return f"""
[model]
name = "embedded"
max_new_tokens = 24
seed = 7
[policy]
cooldown = 0.0
user_burst = 50
channel_burst = 50
[log]
format = "json"
level = "debug"
[state]
dir = "{state}"

[[networks]]
name = "alpha"
[networks.irc]
host = "{alpha.host}"
port = {alpha.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
[networks.operators]
hostmasks = ["{OPERATOR_MASK}"]

[[networks]]
name = "beta"
[networks.irc]
host = "{beta.host}"
port = {beta.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
reconnect_min = 0.5
reconnect_max = 1.0
"""


def bot_says(line: str) -> bool:
    source, verb, params = parse_line(line)
    return source == "relaybot" and verb == "PRIVMSG" and params[:1] == [CHANNEL]


def log_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_one_relaybot_process_on_two_networks(
    irc_server_factory: Callable[[str], RunningServer],
    real_engine: object,  # warms the converted-model cache, so the process loads in seconds
    socket_dir: Path,
    listener: NotifyListener,
    tmp_path: Path,
) -> None:
    alpha = irc_server_factory("inspircd")
    beta = irc_server_factory("ngircd")
    state = tmp_path / "state"
    config = tmp_path / "bot.toml"
    config.write_text(config_text(alpha, beta, state))
    env = {**os.environ, "NOTIFY_SOCKET": str(socket_dir / "notify.sock")}
    env.pop("WATCHDOG_USEC", None)
    log_path = tmp_path / "bot.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "relaybot", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    clients: list[RawClient] = []
    try:
        ready = listener.wait_for(lambda m: m.get("READY") == "1", 180)
        # One STATUS line for both networks, each in its channel.
        assert ready["STATUS"] == (
            f"alpha: connected to {alpha.host}:{alpha.port} as relaybot; in {CHANNEL}"
            f" | beta: connected to {beta.host}:{beta.port} as relaybot; in {CHANNEL}"
        ), ready
        alice = RawClient.connect(alpha.host, alpha.port, "alice")
        bob = RawClient.connect(beta.host, beta.port, "bob")
        clients += [alice, bob]
        alice.join(CHANNEL)
        bob.join(CHANNEL)

        # Replies on both, from one batch: both questions are asked together (continuous
        # batching lets the later one join the batch the earlier one started). The engine
        # logs each batch, with the networks in it, when its last row ends.
        def shared_batch() -> bool:
            return any(
                e["event"] == "batch_generated" and e["networks"] == ["alpha", "beta"]
                for e in log_events(log_path)
            )

        for round_, (sea, mountain) in enumerate(TOPICS):
            alice.privmsg(CHANNEL, f"relaybot: alpha question {round_}, what is {sea} like?")
            bob.privmsg(CHANNEL, f"relaybot: beta question {round_}, what are {mountain} like?")
            alice.wait_for(bot_says, REPLY_TIMEOUT)
            bob.wait_for(bot_says, REPLY_TIMEOUT)
            try:
                wait_until(shared_batch, 10, "a batch of both networks")
                break
            except AssertionError:
                continue
        assert shared_batch(), [e for e in log_events(log_path) if "batch" in e["event"]]

        # The same person (same user@host) is an operator on alpha only.
        oper_a = RawClient.connect(alpha.host, alpha.port, "oper")
        oper_b = RawClient.connect(beta.host, beta.port, "oper")
        clients += [oper_a, oper_b]
        oper_a.join(CHANNEL)
        oper_b.join(CHANNEL)
        oper_a.privmsg(CHANNEL, "!relay status")
        status = parse_line(oper_a.wait_for(notice_to("oper", "network alpha"), 20))[2][-1]
        assert f"channels: {CHANNEL}" in status and "pending for all 2 networks" in status
        oper_b.privmsg(CHANNEL, "!relay mute")
        oper_b.wait_for(notice_to("oper", "mute is for the bot's operators"), 20)

        # Killing one server leaves the other answering; the dead one's STATUS says so.
        beta.stop()
        listener.wait_for(lambda m: "| beta: connecting to" in m.get("STATUS", ""), 30)
        alice.privmsg(CHANNEL, "relaybot: are you still there on alpha?")
        alice.wait_for(bot_says, REPLY_TIMEOUT)
        assert process.poll() is None, "the process ended with one of its servers"

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for client in clients:
            client.close()

    # Each network's context, in its own folder: its own questions, none of the other's.
    alpha_saved = " ".join(p.read_text() for p in (state / "alpha" / "contexts").glob("*.toml"))
    beta_saved = " ".join(p.read_text() for p in (state / "beta" / "contexts").glob("*.toml"))
    assert "alpha question 0" in alpha_saved and "beta question" not in alpha_saved
    assert "beta question 0" in beta_saved and "alpha question" not in beta_saved
    events = log_events(log_path)
    refused = [e for e in events if e["event"] == "command_refused"]
    assert [e["network"] for e in refused] == ["beta"], refused
