"""Switching who the bot is and which model answers, through a real IRC server (ngIRCd):
`set persona` with the embedded model (in the prompt, kept across a restart of the bot),
`model` on the local engine (a restart is needed), and `model` in front of a stand-in
OpenAI-compatible server (each channel's requests name its model; names off the list are
refused)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relaybot.config.schema import Config
from relaybot.inference.remote.openai import OpenAICompletionsEngine
from relaybot.inference.served import LOCAL_KEEPS_ONE
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, notice_to, parse_line, privmsg_from
from tests.support.remote_server import FakeServer, Handler, Seen, completion

pytestmark = pytest.mark.integration
OPERATOR_MASK = "*!*oper@127.0.0.1"
PERSONA = "a lighthouse keeper who loves fog"


def config_text(server: RunningServer, state_dir: Path, channels: str, extra: str = "") -> str:
    return f"""
[irc]
network = "test"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = {channels}
[model]
max_new_tokens = 16
{extra}
[policy]
cooldown = 0.0
user_burst = 50
channel_burst = 50
[operators]
hostmasks = ["{OPERATOR_MASK}"]
[state]
dir = "{state_dir}"
flush_interval = 0.3
"""


@pytest.fixture
def ngircd(irc_server_factory: Callable[[str], RunningServer]) -> RunningServer:
    return irc_server_factory("ngircd")


def _text(line: str) -> str:
    return parse_line(line)[2][-1]


def test_a_persona_reaches_the_prompt_and_survives_a_restart(
    ngircd: RunningServer,
    config_factory: Callable[[str], Config],
    real_engine: object,
    tmp_path: Path,
) -> None:
    config = config_factory(config_text(ngircd, tmp_path / "state", '["#ops"]'))
    oper = RawClient.connect(ngircd.host, ngircd.port, "oper")
    oper.join("#ops")
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#ops") is not None, 20, "the bot to join #ops")
        oper.privmsg("#ops", "!relay set persona " + "x" * 301)
        oper.wait_for(notice_to("oper", "a persona may be at most 300 characters"), 10)
        oper.privmsg("#ops", f"!relay set persona \x02{PERSONA}\x02")
        oper.wait_for(notice_to("oper", "persona set in #ops"), 10)
        prompt = runner.prompt_text("#ops")
        assert "<|im_start|>oper\n/whois relaybot<|im_end|>" in prompt
        assert f"* relaybot's bio: {PERSONA}<|im_end|>" in prompt
        oper.privmsg("#ops", "!relay status")
        status = _text(oper.wait_for(notice_to("oper", "model "), 10))
        assert "#ops (persona: a lighthouse keeper who loves…)" in status

        # The local engine keeps its model: `model` says so and changes nothing.
        oper.privmsg("#ops", "!relay model")
        shown = _text(oper.wait_for(notice_to("oper", "model in #ops: "), 10))
        assert shown.endswith(f"; {LOCAL_KEEPS_ONE}")
        oper.privmsg("#ops", "!relay model another-model")
        assert _text(oper.wait_for(notice_to("oper", "local engine"), 10)) == LOCAL_KEEPS_ONE
        assert runner.on_reactor(lambda: runner.net.operator_state.snapshot.models) == {}

    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#ops") is not None, 20, "the bot to rejoin #ops")
        prompt = runner.prompt_text("#ops")
        # The persona, and who set it, as before the restart.
        assert "<|im_start|>oper\n/whois relaybot<|im_end|>" in prompt
        assert f"* relaybot's bio: {PERSONA}<|im_end|>" in prompt
        oper.privmsg("#ops", "!relay set persona default")
        oper.wait_for(notice_to("oper", "persona removed in #ops"), 10)
        assert "bio" not in runner.prompt_text("#ops")
    oper.close()


# --- in front of an OpenAI-compatible server ---------------------------------------------------


@pytest.fixture
def stand_in() -> Iterator[FakeServer]:
    def respond(handler: Handler, seen: Seen) -> None:
        if seen.method == "GET":  # the start-up probe: /health, /v1/models
            handler.send_json(200, {"data": []})
        else:
            handler.send_json(200, completion("ahoy there"))

    server = FakeServer(respond)
    yield server
    server.close()


def _model_asked_in(server: FakeServer, channel: str) -> list[str | None]:
    return [
        seen.body.get("model")
        for seen in server.posts()
        if f"/join {channel}<|im_end|>" in seen.body["prompt"]
    ]


def test_each_channel_asks_the_server_for_its_model(
    ngircd: RunningServer,
    stand_in: FakeServer,
    config_factory: Callable[[str], Config],
    tmp_path: Path,
) -> None:
    remote = f'engine = "openai"\n[model.remote]\nurl = "{stand_in.url}"\nmodel = "a"\n'
    remote += 'models = ["b"]\nretries = 0\ntimeout = 10.0\n'
    config = config_factory(config_text(ngircd, tmp_path / "state", '["#a", "#b"]', remote))
    engine = OpenAICompletionsEngine.from_config(config.model)
    oper = RawClient.connect(ngircd.host, ngircd.port, "oper")
    oper.join("#a")
    oper.join("#b")
    with BotRunner(config, engine) as runner:
        for channel in ("#a", "#b"):
            runner.wait_until(
                lambda c=channel: runner.turns(c) is not None, 20, f"bot in {channel}"
            )
        oper.privmsg("#a", "!relay model b")
        oper.wait_for(notice_to("oper", "model in #a is now b"), 10)
        oper.privmsg("#a", "!relay model #a c")
        refusal = _text(oper.wait_for(notice_to("oper", "model 'c'"), 10))
        assert refusal == (
            "model 'c' is not on the list; allowed: a, b (the list is [model.remote] models in"
            " the config)"
        )
        oper.privmsg("relaybot", "!relay model")  # in a query: the network's
        shown = _text(oper.wait_for(notice_to("oper", "model on network test"), 10))
        assert shown.startswith("model on network test: a; allowed: a, b")

        oper.privmsg("#a", "relaybot: hello")
        oper.wait_for(privmsg_from("relaybot", "#a"), 20)
        oper.privmsg("#b", "relaybot: hello")
        oper.wait_for(privmsg_from("relaybot", "#b"), 20)
        assert _model_asked_in(stand_in, "#a") == ["b"]
        assert _model_asked_in(stand_in, "#b") == ["a"]

        state = runner.on_reactor(lambda: runner.net.operator_state.snapshot)
        assert (state.model, dict(state.models)) == (None, {"#a": "b"})
        saved = (tmp_path / "state" / "test" / "state.toml").read_text()
        assert '"#a" = "b"' in saved
    oper.close()
