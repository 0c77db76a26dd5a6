"""`more` on real servers through the real embedded model: an answer cut by the token limit
ends with the `(more)` marker; `relaybot: more` from the asker goes on with it (the model
resumed from the answer as written) without repeating it; the context holds the question and
one answer turn, without the marker or the `more` line; a message in between ends the offer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.bridge.layout import MORE_MARKER
from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, parse_line

pytestmark = pytest.mark.integration

CHANNEL = "#more"
REPLY_TIMEOUT = 90.0
QUESTIONS = [
    "relaybot: tell me everything about the history of chess, in detail please",
    "relaybot: explain in detail how a steam engine works",
    "relaybot: describe the water cycle step by step, in detail",
    "relaybot: tell me the whole story of the Roman empire, in detail",
    "relaybot: explain in detail how bread is made, from wheat to loaf",
]


def toml(server: RunningServer) -> str:
    # A token limit this small cuts nearly any answer; one line per part.
    return f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
[policy]
cooldown = 0.0
user_per_minute = 60
user_burst = 10
[reply]
max_lines = 1
[model]
max_new_tokens = 24
seed = 7
"""


def bot_says(line: str) -> bool:
    source, verb, params = parse_line(line)
    return source == "relaybot" and verb == "PRIVMSG" and params[:1] == [CHANNEL]


def bot_notice(line: str) -> bool:
    source, verb, _ = parse_line(line)
    return source == "relaybot" and verb == "NOTICE"


def text_of(line: str) -> str:
    return parse_line(line)[2][-1]


def ask_until_cut(alice: RawClient, questions: list[str]) -> tuple[str, str]:
    """Ask until an answer carries the marker (the model may, rarely, end within the limit):
    the question and the answer's first line. Each question is asked once (the bot declines
    a line repeated)."""
    while questions:
        question = questions.pop(0)
        alice.privmsg(CHANNEL, question)
        text = text_of(alice.wait_for(bot_says, REPLY_TIMEOUT))
        if text.endswith(MORE_MARKER):
            return question, text
    pytest.fail("no answer was cut at max_new_tokens = 24")


@pytest.mark.parametrize("kind", ["ngircd", "inspircd"])
def test_more_goes_on_with_the_answer_on_a_real_server(
    kind: str,
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory(kind)
    with BotRunner(config_factory(toml(server)), real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns(CHANNEL) is not None, 20, "the bot to join")
        alice = RawClient.connect(server.host, server.port, "alice")
        bob = RawClient.connect(server.host, server.port, "bob")
        alice.join(CHANNEL)
        bob.join(CHANNEL)

        questions = list(QUESTIONS)
        # A message in between ends the offer: `more` then gets a notice, not a line.
        ask_until_cut(alice, questions)
        bob.privmsg(CHANNEL, "interesting")
        runner.wait_for_turn(CHANNEL, "interesting")
        alice.privmsg(CHANNEL, "relaybot: more")
        assert text_of(alice.wait_for(bot_notice, REPLY_TIMEOUT)) == (
            "There is no more to my last answer."
        )

        question, first = ask_until_cut(alice, questions)
        sent = first.removesuffix(MORE_MARKER)
        alice.privmsg(CHANNEL, "relaybot: more")
        line = alice.wait_for(lambda line: bot_says(line) or bot_notice(line), REPLY_TIMEOUT)
        assert bot_says(line), f"`more` got no continuation: {line}"
        continuation = text_of(line).removesuffix(MORE_MARKER)
        assert continuation.strip()
        # It goes on from where the first part stopped: the first part is not said again.
        assert not continuation.startswith(sent[: max(10, len(sent) // 2)])

        def answer_turns() -> list[str]:
            turns = runner.turns(CHANNEL) or []
            after = max(i for i, t in enumerate(turns) if t.content == question)
            return [t.content for t in turns[after + 1 :]]

        runner.wait_until(
            lambda: any(continuation in content for content in answer_turns()),
            10,
            "the continuation in the context",
        )
        # One answer turn: the two parts, without the marker or the `more` line between.
        answer = answer_turns()
        assert len(answer) == 1, answer
        assert answer[0].split() == f"{sent} {continuation}".split() or (
            answer[0].replace(" ", "") == (sent + continuation).replace(" ", "")
        )
        assert MORE_MARKER.strip() not in answer[0]
