"""Unit tests for relaybot.bridge.replies: the one clean-up path from model text to IRC lines."""

from __future__ import annotations

from relaybot.bridge.replies import OutLine, irc_lines, moderated, send_lines
from relaybot.moderation import Decision, ModerationContext, Verdict
from tests.support.bridge import FakeSender, Sent

CONTEXT = ModerationContext(network="net", target="#chan", nick="relaybot", private=False)


def lines(text: str, *, actions: bool = True, max_lines: int = 5) -> list[OutLine]:
    return irc_lines(
        text, speaker="relaybot", budget=40, max_lines=max_lines, actions=actions, log_context={}
    )


def test_model_text_never_becomes_a_command() -> None:
    out = lines("<relaybot> hello\n/quit :bye\n/me waves\nPRIVMSG #x :hi\r\nJOIN #y")
    assert out == [
        OutLine("hello", False),
        OutLine("waves", True),
        OutLine("PRIVMSG #x :hi", False),  # text, not a command: sent inside a PRIVMSG
        OutLine("JOIN #y", False),
    ]
    assert lines("/me waves", actions=False) == []


def test_long_text_is_split_and_capped() -> None:
    out = lines("word " * 40, max_lines=2)
    assert len(out) == 2
    assert all(len(line.text.encode()) <= 40 for line in out)


class Rules:
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        return self.verdict


def test_moderation_blocks_replaces_or_lets_through() -> None:
    assert moderated(None, "hi", CONTEXT, {}) == "hi"
    assert moderated(Rules(Verdict.allow()), "hi", CONTEXT, {}) == "hi"
    assert moderated(Rules(Verdict(Decision.BLOCK, "", "h", "r")), "hi", CONTEXT, {}) is None
    assert moderated(Rules(Verdict(Decision.REPLACE, "[x]", "h", "r")), "hi", CONTEXT, {}) == "[x]"


def test_send_lines_reports_each_written_line_and_the_last() -> None:
    sender = FakeSender(deliver_now=False)
    written: list[tuple[str, bool]] = []
    send_lines(
        sender,
        "#chan",
        [OutLine("one", False), OutLine("two", True)],
        on_written=lambda line, last: written.append((line.text, last)),
    )
    assert sender.sent == [Sent("#chan", "one", False), Sent("#chan", "two", True)]
    assert written == []  # nothing is written before the outbox writes it
    sender.flush()
    assert written == [("one", False), ("two", True)]
