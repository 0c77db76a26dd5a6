"""The `ask` command against a real IRC server (miniircd) and the real embedded model: an
operator's question is answered in the channel from the channel's log in the cards'
closed-context format, with the cited lines named; the answer stays out of the context;
strangers are refused; a model not trained for it is explained."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from relaybot.config.schema import Config
from relaybot.inference.engine import GenerationRequest
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, RunningServer, notice_to, parse_line, privmsg_from

pytestmark = pytest.mark.integration
OPERATOR_MASK = "*!*@127.0.0.1"


class Recording:
    """The real engine, with the requests it was given kept for inspection."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.description = inner.description
        self.context_window = inner.context_window
        self.tokenizer = inner.tokenizer
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.requests.extend(requests)
        return list(self.inner.generate(requests))


def _config(server: RunningServer, qa: bool, operators: str = OPERATOR_MASK) -> str:
    return f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#lab"]
[reply]
on_mention = true
chance = 0.0
max_lines = 2
[model]
format = "chatml"
qa = {"true" if qa else "false"}
max_new_tokens = 40
seed = 3
[operators]
hostmasks = ["{operators}"]
"""


@pytest.fixture
def miniircd(irc_server_factory: Callable[[str], RunningServer]) -> RunningServer:
    return irc_server_factory("miniircd")


def test_ask_answers_from_the_log_with_cited_lines(
    miniircd: RunningServer,
    config_factory: Callable[[str], Config],
    real_engine: Any,
    tmp_path: Path,
) -> None:
    engine = Recording(real_engine)
    config = config_factory(_config(miniircd, qa=True))
    with (
        BotRunner(config, engine) as runner,  # type: ignore[arg-type]
        RawClient.connect(miniircd.host, miniircd.port, "alice") as alice,
    ):
        runner.wait_until(lambda: runner.turns("#lab") is not None, 20, "the bot to join")
        alice.join("#lab")
        for line in (
            "the build server moved to rack 4 yesterday",
            "lunch is at noon on fridays",
            "the wifi password is on the whiteboard",
        ):
            alice.privmsg("#lab", line)
        runner.wait_for_turn("#lab", "the wifi password is on the whiteboard")
        before = runner.turns("#lab")

        alice.privmsg("#lab", "!relay ask where is the build server?")
        answer = alice.wait_for(privmsg_from("relaybot", "#lab"), 120)
        text = parse_line(answer)[2][-1]
        assert text.startswith("alice: ")
        assert "[from line" in text or "[no line cited]" in text

        (request,) = engine.requests
        prompt = request.prompt.text
        assert request.params.temperature == 0.0
        assert prompt.startswith("<|im_start|>system\nYou answer questions about an IRC channel")
        assert (
            "BEGININPUT\nBEGINCONTEXT\nchannel: #lab\nline: 2\nnick: alice\nENDCONTEXT\n"
            "the build server moved to rack 4 yesterday\nENDINPUT" in prompt
        )
        assert "BEGININSTRUCTION\nwhere is the build server?\n" in prompt
        assert prompt.endswith("ENDINSTRUCTION<|im_end|>\n<|im_start|>assistant\n")
        # A tool's answer, not conversation: the context is as it was.
        assert runner.turns("#lab") == before

    # A stranger (not from the operators' hostmask) is refused and nothing is generated.
    config = config_factory(_config(miniircd, qa=True, operators="*!*@192.0.2.1"))
    fixed = FixedEngine("never")
    with (
        BotRunner(config, fixed) as runner,
        RawClient.connect(miniircd.host, miniircd.port, "mallory") as mallory,
    ):
        runner.wait_until(lambda: runner.turns("#lab") is not None, 20, "the bot to join")
        mallory.join("#lab")
        mallory.privmsg("#lab", "hello")
        runner.wait_for_turn("#lab", "hello")
        mallory.privmsg("#lab", "!relay ask what did I say?")
        mallory.wait_for(notice_to("mallory", "ask is for the bot's operators"), 10)
        assert fixed.requests == 0


def test_ask_is_explained_when_the_model_was_not_trained_for_it(
    miniircd: RunningServer, config_factory: Callable[[str], Config]
) -> None:
    fixed = FixedEngine("never")
    config = config_factory(_config(miniircd, qa=False))
    with (
        BotRunner(config, fixed) as runner,
        RawClient.connect(miniircd.host, miniircd.port, "alice") as alice,
    ):
        runner.wait_until(lambda: runner.turns("#lab") is not None, 20, "the bot to join")
        alice.join("#lab")
        alice.privmsg("#lab", "!relay ask anything?")
        alice.wait_for(notice_to("alice", "set model.qa = true"), 10)
        alice.privmsg("#lab", "!relay ask #nowhere anything?")
        alice.wait_for(notice_to("alice", "needs a model trained"), 10)
        assert fixed.requests == 0


def test_after_a_reload_answers_go_through_the_new_moderation_and_max_lines(
    miniircd: RunningServer, config_factory: Callable[[str], Config], tmp_path: Path
) -> None:
    config_path = tmp_path / "bot.toml"
    config_path.write_text(_config(miniircd, qa=True))
    fixed = FixedEngine("the build server is in rack 4\nrack 4 is by the door\nbring a badge")
    config = config_factory(config_path.read_text())
    with (
        BotRunner(config, fixed, config_path=config_path) as runner,
        RawClient.connect(miniircd.host, miniircd.port, "alice") as alice,
    ):
        runner.wait_until(lambda: runner.turns("#lab") is not None, 20, "the bot to join")
        alice.join("#lab")
        alice.privmsg("#lab", "the build server moved to rack 4")
        runner.wait_for_turn("#lab", "the build server moved to rack 4")
        alice.privmsg("#lab", "!relay ask where is the build server?")
        first = alice.wait_for(privmsg_from("relaybot", "#lab"), 30)
        assert "rack 4" in parse_line(first)[2][-1]
        old_chain = runner.net.moderation

        config_path.write_text(
            _config(miniircd, qa=True).replace("max_lines = 2", "max_lines = 1")
            + '[[moderation.hooks]]\nuse = "words"\nwords = ["badge"]\n'
        )
        assert runner.on_reactor(runner.net.reload).startswith("config reloaded")
        assert runner.net.moderation is not old_chain
        assert old_chain._worker is None  # closed, its hook thread stopped

        # The answer's third line names a blocked word: the whole answer is withheld.
        seen = len(alice.lines)
        alice.privmsg("#lab", "!relay ask where is the build server?")
        runner.wait_until(lambda: fixed.requests == 2, 20, "the second question")
        # Then an answer without it, longer than one IRC line: one line now (max_lines = 1).
        fixed.text = "the build server is in rack 4 " + "by the door " * 60
        alice.privmsg("#lab", "!relay ask where is the build server?")
        alice.wait_for(lambda line: "rack 4" in line and privmsg_from("relaybot", "#lab")(line), 30)
        with contextlib.suppress(TimeoutError):
            alice.wait_for(lambda line: False, 1.5)  # anything still on its way
        answers = [line for line in alice.lines[seen:] if privmsg_from("relaybot", "#lab")(line)]
        assert len(answers) == 1, answers
        assert "badge" not in answers[0]
