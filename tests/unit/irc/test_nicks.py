"""relaybot.irc.nicks: the nick to try after 432/433/437, the fallback once the alternatives
are used up, and when to ask for the configured nick again."""

from __future__ import annotations

import pytest

from relaybot.irc import nicks
from relaybot.irc.nicks import NICK_REGAIN_INTERVAL, NickKeeper, fallback_nick
from relaybot.irc.text import casefold


def keeper(*alternatives: str, wanted: str = "relaybot") -> NickKeeper:
    return NickKeeper(wanted, alternatives, lambda name: casefold(name, "rfc1459"))


def test_refused_nicks_go_through_the_alternatives_then_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nicks, "random", FakeRandom(42))
    nick = keeper("rbot", "relay_bot")
    nick.reset()
    assert nick.refused("relaybot") == "rbot"
    assert nick.refused("rbot") == "relay_bot"
    assert nick.refused("relay_bot") == "relaybo_"
    assert nick.refused("relaybo_") == "relaybo42"
    nick.reset()  # a new connection tries the alternatives again
    assert nick.refused("relaybot") == "rbot"


def test_regain_is_tried_once_an_interval_while_the_nick_is_not_ours() -> None:
    nick = keeper()
    nick.registered(100.0)
    assert not nick.regain_due(100.0 + NICK_REGAIN_INTERVAL - 1, "relaybo_")
    assert nick.regain_due(100.0 + NICK_REGAIN_INTERVAL, "relaybo_")
    assert not nick.regain_due(100.0 + NICK_REGAIN_INTERVAL + 1, "relaybo_")  # just tried
    assert nick.regain_due(100.0 + 2 * NICK_REGAIN_INTERVAL, "relaybo_")


def test_no_regain_while_the_nick_is_ours() -> None:
    nick = keeper()
    nick.registered(0.0)
    assert not nick.regain_due(NICK_REGAIN_INTERVAL, "RelayBot")
    # ... and that due time still counts: the next try is a whole interval later.
    assert not nick.regain_due(NICK_REGAIN_INTERVAL + 1, "relaybo_")


def test_freed_only_for_the_wanted_nick_when_we_lack_it() -> None:
    nick = keeper(wanted="Robot[1]")
    assert nick.freed("robot{1}", "robot_")
    assert not nick.freed("someone", "robot_")
    assert not nick.freed("robot{1}", "ROBOT[1]")
    assert nick.is_wanted("ROBOT{1}") and not nick.is_wanted("robot_")


# --- fallback_nick ------------------------------------------------------------------------------


class FakeRandom:
    def __init__(self, value: int) -> None:
        self.value = value
        self.calls: list[tuple[int, int]] = []

    def randint(self, low: int, high: int) -> int:
        self.calls.append((low, high))
        return self.value


def test_fallback_after_alt_nick(monkeypatch: pytest.MonkeyPatch):
    fake = FakeRandom(42)
    monkeypatch.setattr(nicks, "random", fake)
    assert fallback_nick("rbot", "relaybot") == "relaybo_"
    assert fake.calls == []


def test_fallback_after_own_nick_uses_random_suffix(monkeypatch: pytest.MonkeyPatch):
    fake = FakeRandom(42)
    monkeypatch.setattr(nicks, "random", fake)
    assert fallback_nick("relaybot", "relaybot") == "relaybo42"
    assert fallback_nick("relaybo_", "relaybot") == "relaybo42"
    assert fake.calls == [(10, 99), (10, 99)]


def test_fallback_nick_fits_nicklen_9(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nicks, "random", FakeRandom(99))
    for tried in ("averyveryverylongnick", "other", "averyve_"):
        assert len(fallback_nick(tried, "averyveryverylongnick")) <= 9


def test_fallback_short_base(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nicks, "random", FakeRandom(10))
    assert fallback_nick("bot", "bot") == "bot10"
    assert fallback_nick("other", "bot") == "bot_"


def test_fallback_real_random_is_in_range():
    for _ in range(50):
        nick = fallback_nick("relaybot", "relaybot")
        assert nick.startswith("relaybo") and 10 <= int(nick[7:]) <= 99
