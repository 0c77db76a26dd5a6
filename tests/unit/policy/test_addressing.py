"""Unit tests for relaybot.policy.gate: when the bot is addressed and when it replies."""

from __future__ import annotations

import pytest

from relaybot.policy.gate import ReplyPolicy, is_addressed


@pytest.mark.parametrize(
    "text",
    [
        "relaybot: hi",
        "relaybot, hi",
        "relaybot hi",
        "hey relaybot",
        "hey relaybot!",
        "what do you think, relaybot?",
        "RelayBot",
        "RELAYBOT: hi",
        "relaybot's opinion",
        "@relaybot hi",
        "\x02relaybot\x02: bold nick",
        "\x0304relaybot\x03: coloured nick",
    ],
)
def test_addressed(text: str):
    assert is_addressed(text, "relaybot")


@pytest.mark.parametrize(
    "text",
    [
        "relaybots are cool",
        "xrelaybot",
        "relaybot_",
        "relaybot-ng",
        "relay bot",
        "relay_bot",
        "[relaybot]",
        "{relaybot}",
        "",
        "nothing to see",
    ],
)
def test_not_addressed(text: str):
    assert not is_addressed(text, "relaybot")


def test_nick_case_does_not_matter():
    assert is_addressed("relaybot: hi", "RelayBot")


def test_rfc1459_casefolding_of_brackets():
    assert is_addressed("relay{bot}: hi", "relay[bot]")
    assert is_addressed("RELAY[BOT]: hi", "relay{bot}")
    assert is_addressed("relay|bot: hi", "relay\\bot")
    assert is_addressed("relay^: hi", "relay~")


def test_ascii_casemapping_keeps_brackets_distinct():
    assert not is_addressed("relay{bot}: hi", "relay[bot]", "ascii")
    assert is_addressed("relay[bot]: hi", "Relay[Bot]", "ascii")


def test_nick_with_regex_metacharacters():
    assert is_addressed("a^b: hi", "a^b")
    assert not is_addressed("axb: hi", "a.b")
    assert is_addressed("a.b: hi", "a.b")


def test_bracket_nick_word_edges():
    assert not is_addressed("xrelay[bot]", "relay[bot]")
    assert not is_addressed("relay[bot]s", "relay[bot]")


# --- ReplyPolicy --------------------------------------------------------------------------------


def never_called() -> float:
    raise AssertionError("random must not be consulted")


def decide(policy: ReplyPolicy, **overrides: object) -> bool:
    kwargs: dict[str, object] = {
        "text": "relaybot: hi",
        "sender": "alice",
        "bot_nick": "relaybot",
        "private": False,
        "random": never_called,
    }
    kwargs.update(overrides)
    return policy.should_reply(**kwargs)  # type: ignore[arg-type]


def test_replies_when_addressed():
    assert decide(ReplyPolicy())


def test_no_reply_when_not_addressed_and_no_chance():
    assert not decide(ReplyPolicy(), text="just chatting")


def test_never_replies_to_itself():
    policy = ReplyPolicy(chance=1.0)
    assert not decide(policy, sender="relaybot", random=lambda: 0.0)
    assert not decide(policy, sender="RelayBot", random=lambda: 0.0)
    assert not decide(policy, sender="relaybot", private=True, random=lambda: 0.0)


def test_never_replies_to_itself_rfc1459():
    assert not decide(
        ReplyPolicy(), sender="relay{bot}", bot_nick="relay[bot]", text="relay[bot]: hi"
    )


def test_replies_in_queries():
    assert decide(ReplyPolicy(), private=True, text="no nick mentioned")


def test_queries_can_be_switched_off():
    assert not decide(ReplyPolicy(in_query=False), private=True, text="relaybot: hi")


def test_on_mention_off():
    assert not decide(ReplyPolicy(on_mention=False))


def test_chance_uses_injected_random():
    policy = ReplyPolicy(chance=0.25)
    assert decide(policy, text="chatter", random=lambda: 0.1)
    assert not decide(policy, text="chatter", random=lambda: 0.25)
    assert not decide(policy, text="chatter", random=lambda: 0.9)


def test_chance_consulted_once_per_message():
    calls: list[int] = []

    def fake_random() -> float:
        calls.append(1)
        return 0.0

    assert decide(ReplyPolicy(chance=0.5), text="chatter", random=fake_random)
    assert len(calls) == 1


def test_zero_chance_never_consults_random():
    assert not decide(ReplyPolicy(chance=0.0), text="chatter", random=never_called)


def test_chance_applies_even_when_mentions_are_off():
    assert decide(ReplyPolicy(on_mention=False, chance=0.5), random=lambda: 0.2)
