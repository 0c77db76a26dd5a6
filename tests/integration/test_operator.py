"""Operator commands through a real IRC server (ngIRCd) and the real embedded model:
each command's effect, refusals for the unauthorised (including a nick thief), and
channel-operator scope."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog.testing

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, notice_to, parse_line, privmsg_from

pytestmark = pytest.mark.integration
REPLY_TIMEOUT = 90.0
OPERATOR_MASK = "*!*oper@127.0.0.1"


def config_text(server: RunningServer, state_dir: Path, extra: str = "") -> str:
    return f"""
[irc]
network = "test"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#ops"]
[reply]
max_lines = 2
[model]
max_new_tokens = 24
seed = 7
[policy]
cooldown = 0.0
user_burst = 50
channel_burst = 50
[operators]
hostmasks = ["{OPERATOR_MASK}"]
{extra}
[state]
dir = "{state_dir}"
flush_interval = 0.5
"""


@pytest.fixture
def ngircd(irc_server_factory: Callable[[str], RunningServer]) -> RunningServer:
    return irc_server_factory("ngircd")


@pytest.fixture
def runner(
    ngircd: RunningServer,
    config_factory: Callable[[str], Config],
    real_engine: object,
    tmp_path: Path,
) -> Iterator[BotRunner]:
    config_path = tmp_path / "bot.toml"
    config_path.write_text(config_text(ngircd, tmp_path / "state"))
    config = config_factory(config_path.read_text())
    with BotRunner(config, real_engine, config_path=config_path) as bot:  # type: ignore[arg-type]
        bot.wait_until(lambda: bot.turns("#ops") is not None, 20, "the bot to join #ops")
        yield bot


def test_channel_commands_each_do_what_they_say(runner: BotRunner, ngircd: RunningServer):
    oper = RawClient.connect(ngircd.host, ngircd.port, "oper")
    oper.join("#ops")
    runner.wait_for_turn("#ops", "* oper has joined #ops")

    oper.privmsg("#ops", "!relay help")
    assert "status" in oper.wait_for(notice_to("oper", "commands"), 10)
    oper.privmsg("#ops", "!relay help mute")
    oper.wait_for(notice_to("oper", "mute [#channel] [duration]"), 10)
    oper.privmsg("#ops", "!relay status")
    status = oper.wait_for(notice_to("oper", "model "), 10)
    assert "#ops" in status and "up " in status
    # What waits to go out and what freshness dropped: nothing yet.
    assert "outbox 0 lines; dropped 0 stale, 0 superseded, 0 for backlog" in status
    # Commands never enter the channel's context.
    assert not any("!relay" in turn.content for turn in runner.turns("#ops") or [])

    # mute: addressed lines are heard but not answered; unmute answers again.
    oper.privmsg("#ops", "!relay mute 10m")
    oper.wait_for(notice_to("oper", "muted in #ops 10m"), 10)
    oper.privmsg("#ops", "relaybot: are you there?")
    runner.wait_for_turn("#ops", "relaybot: are you there?")
    assert runner.on_reactor(lambda: runner.net.relay.in_flight()) == 0
    oper.privmsg("#ops", "!relay status")
    assert "#ops (muted 1" in oper.wait_for(notice_to("oper", "model "), 10)
    oper.privmsg("#ops", "!relay unmute")
    oper.wait_for(notice_to("oper", "unmuted in #ops"), 10)
    oper.privmsg("#ops", "relaybot: say something")
    first_reply = oper.wait_for(privmsg_from("relaybot", "#ops"), REPLY_TIMEOUT)
    assert not any(
        privmsg_from("relaybot", "#ops")(line)
        for line in oper.lines[: oper.lines.index(first_reply)]
    ), "the bot answered while muted"

    # cast: the persona goes into the never-trimmed header of the prompt.
    oper.privmsg("#ops", "!relay cast a pirate who loves rum")
    oper.wait_for(notice_to("oper", "persona set in #ops"), 10)
    prompt = runner.prompt_text("#ops")
    assert "<|im_start|>oper\n/whois relaybot<|im_end|>" in prompt
    assert "* relaybot's bio: a pirate who loves rum" in prompt

    # set: per-channel sampling; bad values are explained.
    oper.privmsg("#ops", "!relay set temperature 0.9")
    oper.wait_for(notice_to("oper", "temperature in #ops is now 0.9"), 10)
    key = runner.net.relay.key("#ops")
    assert runner.on_reactor(lambda: runner.net.relay.settings_for(key).temperature) == 0.9
    oper.privmsg("#ops", "!relay set temperature hot")
    oper.wait_for(notice_to("oper", "temperature must be a number"), 10)
    oper.privmsg("#ops", "!relay set colour blue")
    oper.wait_for(notice_to("oper", "unknown setting"), 10)

    # retry: the last reply is replaced by a freshly generated one.
    last = parse_line(first_reply)[2][-1]
    oper.privmsg("#ops", "!relay retry")
    oper.wait_for(notice_to("oper", "regenerating"), 10)
    oper.wait_for(privmsg_from("relaybot", "#ops"), REPLY_TIMEOUT)
    runner.wait_until(
        lambda: not any(t.content == last for t in runner.turns("#ops") or []),
        10,
        "the retried reply to leave the context",
    )

    # ignore / unignore by nick mask.
    pest = RawClient.connect(ngircd.host, ngircd.port, "pest")
    pest.join("#ops")
    runner.wait_for_turn("#ops", "* pest has joined #ops")
    oper.privmsg("#ops", "!relay ignore pest")
    oper.wait_for(notice_to("oper", "ignoring pest"), 10)
    pest.privmsg("#ops", "spam spam spam")
    oper.privmsg("#ops", "marker after spam")
    runner.wait_for_turn("#ops", "marker after spam")
    assert not any("spam spam" in t.content for t in runner.turns("#ops") or [])
    oper.privmsg("#ops", "!relay unignore pest")
    oper.wait_for(notice_to("oper", "no longer ignoring pest"), 10)
    pest.privmsg("#ops", "heard again")
    runner.wait_for_turn("#ops", "heard again")

    # export: the context as JSONL in the state directory.
    oper.privmsg("#ops", "!relay export")
    exported = parse_line(oper.wait_for(notice_to("oper", "exported #ops to "), 10))[2][-1]
    path = Path(exported.split(" to ", 1)[1])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"role": "relaybot", "content": "/join #ops"} in rows
    assert {"role": "pest", "content": "heard again"} in rows

    # reset: the rolling context is emptied, the header stays.
    oper.privmsg("#ops", "!relay reset")
    oper.wait_for(notice_to("oper", "context of #ops cleared"), 10)
    transcript = runner.net.relay.transcript("#ops")
    assert transcript is not None
    assert runner.on_reactor(lambda: transcript.turns) == []
    assert runner.on_reactor(lambda: transcript.header)[0].content == "/join #ops"
    for client in (oper, pest):
        client.close()


def test_join_part_and_reload(runner: BotRunner, ngircd: RunningServer, tmp_path: Path):
    oper = RawClient.connect(ngircd.host, ngircd.port, "oper")
    oper.privmsg("relaybot", "!relay join #second")  # in a private query
    oper.wait_for(notice_to("oper", "joining #second"), 10)
    runner.wait_until(lambda: runner.turns("#second") is not None, 10, "the bot in #second")
    oper.privmsg("relaybot", "!relay part #second")
    oper.wait_for(notice_to("oper", "left #second"), 10)
    runner.wait_until(lambda: runner.turns("#second") is None, 10, "the bot to leave #second")
    oper.privmsg("relaybot", "!relay part")
    oper.wait_for(notice_to("oper", "which channel?"), 10)

    config_path = tmp_path / "bot.toml"
    config_path.write_text(
        config_path.read_text().replace('channels = ["#ops"]', 'channels = ["#ops", "#third"]')
    )
    oper.privmsg("relaybot", "!relay reload")
    oper.wait_for(notice_to("oper", "config reloaded; joined #third"), 10)
    runner.wait_until(lambda: runner.turns("#third") is not None, 10, "the bot in #third")
    config_path.write_text("[irc]\nhost = 5\n")
    oper.privmsg("relaybot", "!relay reload")
    oper.wait_for(notice_to("oper", "reload failed, still on the old config: irc.host"), 10)
    oper.close()


def test_unauthorised_users_are_refused_even_with_an_operators_nick(
    runner: BotRunner, ngircd: RunningServer
):
    oper = RawClient.connect(ngircd.host, ngircd.port, "oper")
    oper.privmsg("relaybot", "!relay status")
    oper.wait_for(notice_to("oper", "model "), 10)
    oper.close()
    thief = RawClient.connect(ngircd.host, ngircd.port, "intruder")
    thief.join("#ops")
    # Take the operator's nick once it is free.
    for _ in range(50):
        thief.send("NICK oper")
        try:
            thief.wait_for(lambda line: parse_line(line)[1] == "NICK", 0.2)
            break
        except TimeoutError:
            continue
    with structlog.testing.capture_logs() as logs:
        for command in ("part #ops", "mute", "ignore *", "reload", "join #elsewhere"):
            thief.privmsg("#ops", f"!relay {command}")
        thief.wait_for(notice_to("oper", "Sorry, part is for the bot's operators."), 10)
        thief.wait_for(notice_to("oper", "Sorry, mute is for the bot's operators."), 10)
        runner.wait_until(
            lambda: sum(e["event"] == "operator_impersonation_refused" for e in logs) == 5,
            10,
            "five impersonation log lines",
        )
    spoof = next(e for e in logs if e["event"] == "operator_impersonation_refused")
    assert spoof["nick"] == "oper" and spoof["hostmask"].startswith("oper!~intruder@")
    runner.wait_until(lambda: runner.turns("#ops") is not None, 1, "the bot still in #ops")
    relay = runner.net.relay
    assert runner.on_reactor(lambda: relay.is_muted(relay.key("#ops"))) is False
    assert runner.on_reactor(lambda: runner.net.operator_state.ignores()) == ()
    assert runner.turns("#elsewhere") is None
    thief.close()


def test_channel_operators_get_channel_commands_only_where_they_are_ops(
    ngircd: RunningServer,
    config_factory: Callable[[str], Config],
    real_engine: object,
    tmp_path: Path,
):
    text = config_text(ngircd, tmp_path / "state", extra="channel_ops = true")
    config = config_factory(text)
    chanop = RawClient.connect(ngircd.host, ngircd.port, "chanop")
    chanop.join("#mine")  # first in: ngIRCd makes chanop a channel operator
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#ops") is not None, 20, "the bot in #ops")
        oper = RawClient.connect(ngircd.host, ngircd.port, "oper")
        oper.privmsg("relaybot", "!relay join #mine")
        runner.wait_until(lambda: runner.turns("#mine") is not None, 10, "the bot in #mine")
        relay = runner.net.relay
        runner.wait_until(
            lambda: runner.on_reactor(lambda: relay.status_of("#mine", "chanop")) == "@",
            10,
            "chanop's status from NAMES",
        )
        chanop.privmsg("#mine", "!relay mute 5m")
        chanop.wait_for(notice_to("chanop", "muted in #mine 5m"), 10)
        chanop.privmsg("#mine", "!relay join #other")
        chanop.wait_for(notice_to("chanop", "Sorry, join is for the bot's operators."), 10)
        chanop.join("#ops")  # not an operator there
        chanop.privmsg("#ops", "!relay mute")
        chanop.wait_for(notice_to("chanop", "Sorry, mute is for the bot's operators."), 10)
        # Losing channel status (MODE -o) loses the right.
        chanop.send("MODE #mine -o chanop")
        runner.wait_until(
            lambda: runner.on_reactor(lambda: relay.status_of("#mine", "chanop")) == "",
            10,
            "chanop's status to drop",
        )
        chanop.privmsg("#mine", "!relay unmute")
        # Refusal notices are rate-limited (two came already); a plain line sent after
        # the command shows that the bot has handled the command by now.
        chanop.privmsg("#mine", "sync marker")
        runner.wait_for_turn("#mine", "sync marker")
        assert runner.on_reactor(lambda: relay.is_muted(relay.key("#mine")))
        for client in (oper, chanop):
            client.close()
