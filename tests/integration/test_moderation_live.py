"""Moderation hooks in the live reply path, against a real IRC server: a hook blocks (nothing
sent, nothing in the context), replaces (the replaced text is sent and remembered), fails
closed when it raises, and an input hook keeps a line out of the context."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import structlog.testing

from relaybot.config.schema import Config
from relaybot.inference.engine import GenerationRequest
from relaybot.moderation import ModerationContext, Verdict
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, parse_line

pytestmark = pytest.mark.integration


class Exploding:
    """A third-party hook with a bug: it raises on some replies."""

    name = "exploding"

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        return Verdict.allow()

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        if "boom" in text:
            raise RuntimeError("hook bug")
        return Verdict.allow()


class QueuedEngine:
    """Answers each request with the next scripted reply."""

    description = "queued"
    context_window = 2048

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return [self.replies.pop(0) for _ in requests]


def test_hooks_block_replace_and_fail_closed_in_the_live_path(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory("miniircd")
    config = config_factory(f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#mod"]
[policy]
cooldown = 0.0
user_burst = 10
[moderation]
timeout = 2.0
[[moderation.hooks]]
use = "words"
words = ["forbidden"]
apply_to = "output"
[[moderation.hooks]]
use = "words"
words = ["darn"]
action = "replace"
apply_to = "output"
[[moderation.hooks]]
use = "tests.integration.test_moderation_live:Exploding"
[[moderation.hooks]]
use = "words"
words = ["spamword"]
apply_to = "input"
""")
    engine = QueuedEngine(["this is forbidden talk", "well darn it", "boom goes the hook", "fine"])
    alice = RawClient.connect(server.host, server.port, "alice")
    alice.join("#mod")

    def bot_said(line: str) -> bool:
        source, command, params = parse_line(line)
        return source == "relaybot" and command == "PRIVMSG" and params[:1] == ["#mod"]

    with BotRunner(config, engine) as runner, structlog.testing.capture_logs() as logs:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#mod") is not None, 20, "the bot to join")

        def logged(event: str, count: int = 1) -> Callable[[], bool]:
            return lambda: sum(e["event"] == event for e in logs) >= count

        alice.privmsg("#mod", "relaybot: one")
        runner.wait_until(logged("reply_blocked"), 10, "the first reply to be blocked")
        blocked = next(e for e in logs if e["event"] == "moderation_blocked")
        assert blocked["hook"] == "words#1" and blocked["reason"] == "matched a listed word"

        alice.privmsg("#mod", "relaybot: two")
        sent = alice.wait_for(bot_said, 10)
        assert parse_line(sent)[2][-1] == "well *** it"  # the blocked reply was never sent

        alice.privmsg("#mod", "relaybot: three")
        runner.wait_until(logged("reply_blocked", 2), 10, "the failing hook to block")
        failure = next(e for e in logs if e["event"] == "moderation_hook_failed")
        assert failure["hook"] == "exploding" and "hook bug" in failure["error"]

        alice.privmsg("#mod", "buy spamword now, relaybot")
        alice.privmsg("#mod", "relaybot: four")
        assert parse_line(alice.wait_for(bot_said, 10))[2][-1] == "fine"
        contents = [turn.content for turn in runner.turns("#mod") or []]
        assert "well *** it" in contents and "fine" in contents
        assert not any("forbidden" in c or "boom" in c or "spamword" in c for c in contents)
        assert any(e["event"] == "input_blocked" for e in logs)
    alice.close()
