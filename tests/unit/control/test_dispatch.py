"""Tests for relaybot.control.dispatch: Control checks rights and carries commands out."""

from __future__ import annotations

import dataclasses
import math

import pytest

from relaybot.config.schema import OperatorConfig
from relaybot.control.commands import COMMANDS
from relaybot.control.dispatch import Control
from relaybot.inference.served import LOCAL_KEEPS_ONE, TGI_SERVES_ONE, ServedModels
from relaybot.irc.events import Message, Origin
from relaybot.irc.text import casefold

# --- Control: rights checks when commands are carried out -------------------------------------


class FakeBot:
    """An OperatorActions that records the actions Control asks for."""

    def __init__(self, operators: OperatorConfig) -> None:
        self.operators = operators
        self.network = "net"
        self.context_tokens = 2048
        self.answers_questions = False
        self.status: dict[tuple[str, str], str] = {}
        self.notices: list[tuple[str, str]] = []
        self.actions: list[tuple[object, ...]] = []
        self.served_models = ServedModels("openai", "a", ("a", "b"))
        self.models: dict[str | None, str] = {}

    def fold(self, name: str) -> str:
        return casefold(name, "rfc1459")

    def status_of(self, channel: str, nick: str) -> str:
        return self.status.get((self.fold(channel), self.fold(nick)), "")

    def send_notice(self, nick: str, text: str) -> None:
        self.notices.append((nick, text))

    def mute(self, channel: str, seconds: float) -> None:
        self.actions.append(("mute", channel, seconds))

    def unmute(self, channel: str) -> None:
        self.actions.append(("unmute", channel))

    def join_channel(self, name: str, key: str | None = None) -> None:
        self.actions.append(("join", name, key))

    def ignore(self, mask: str) -> None:
        self.actions.append(("ignore", mask))

    def set_setting(self, channel: str, name: str, value: object) -> None:
        self.actions.append(("set", channel, name, value))

    def cast(self, channel: str, caster: str, bio: str | None) -> None:
        self.actions.append(("cast", channel, caster, bio))

    def model_for(self, channel: str | None) -> str | None:
        chosen = self.models.get(self.fold(channel)) if channel else None
        return chosen or self.models.get(None)

    def set_model(self, channel: str | None, name: str | None) -> None:
        self.actions.append(("model", channel, name))
        key = self.fold(channel) if channel else None
        if name is None:
            self.models.pop(key, None)
        else:
            self.models[key] = name

    def status_line(self) -> str:
        return "all fine"

    def more(self, where: str, origin: Origin, msgid: str | None, *, privately: bool) -> None:
        self.actions.append(("more", where, origin.nick, msgid, privately))


OPS = OperatorConfig(prefix="!relay", accounts=("root",), hostmasks=("admin!~adm@trusted.example",))


ROOT = Origin("whoever", "u", "h.example", "root")


ADMIN = Origin("admin", "~adm", "trusted.example")


FAKE_ADMIN = Origin("admin", "~adm", "evil.example")


STRANGER = Origin("carol", "c", "c.example")


def control(operators: OperatorConfig = OPS) -> tuple[Control, FakeBot]:
    bot = FakeBot(operators)
    return Control(bot, clock=lambda: 0.0), bot  # type: ignore[arg-type]  # a partial fake


def run(ctl: Control, origin: Origin, text: str, channel: str | None = "#chan") -> None:
    ctl.handle(Message(origin, channel or "relaybot", text), channel)


@pytest.mark.parametrize("origin", [ROOT, ADMIN])
def test_operators_may_mute(origin: Origin):
    ctl, bot = control()
    run(ctl, origin, "!relay mute 10m")
    assert bot.actions == [("mute", "#chan", 600.0)]
    assert bot.notices == [(origin.nick, "muted in #chan 10m")]


@pytest.mark.parametrize("origin", [FAKE_ADMIN, Origin("admin"), Origin("root", "x", "y")])
def test_operator_nick_alone_is_refused(origin: Origin):
    ctl, bot = control()
    run(ctl, origin, "!relay mute")
    run(ctl, origin, "!relay join #evil", None)
    assert bot.actions == []
    assert all("Sorry" in text for _, text in bot.notices)


def test_channel_operator_scope():
    ctl, bot = control(dataclasses.replace(OPS, channel_ops=True))
    bot.status[("#chan", "carol")] = "@"
    run(ctl, STRANGER, "!relay mute")
    run(ctl, STRANGER, "!relay unmute #CHAN")
    run(ctl, STRANGER, "!relay mute #other")  # no status there
    run(ctl, STRANGER, "!relay join #new")  # global: operators only
    run(ctl, STRANGER, "!relay ignore bob")
    assert bot.actions == [("mute", "#chan", math.inf), ("unmute", "#CHAN")]


def test_voice_and_halfop_are_not_channel_operators():
    ctl, bot = control(dataclasses.replace(OPS, channel_ops=True))
    bot.status[("#chan", "carol")] = "%+"
    run(ctl, STRANGER, "!relay mute")
    assert bot.actions == []


def test_channel_command_from_a_query_needs_a_channel():
    ctl, bot = control()
    run(ctl, ROOT, "!relay mute", None)
    assert bot.actions == []
    assert "which channel?" in bot.notices[0][1]
    run(ctl, ROOT, "!relay mute #chan 1h", None)
    assert bot.actions == [("mute", "#chan", 3600.0)]


def test_bad_duration_is_refused():
    ctl, bot = control()
    run(ctl, ROOT, "!relay mute forever")
    assert bot.actions == []
    assert "not a duration" in bot.notices[0][1]


def test_errors_are_not_explained_to_strangers():
    ctl, bot = control()
    run(ctl, STRANGER, "!relay frobnicate")
    assert bot.notices == []
    run(ctl, ROOT, "!relay frobnicate")
    assert "unknown command" in bot.notices[0][1]


def test_refusals_are_rate_limited():
    ctl, bot = control()
    for _ in range(20):
        run(ctl, STRANGER, "!relay mute")
    assert bot.actions == []
    assert 1 <= len(bot.notices) <= 2


def test_help_from_strangers_cannot_flood_the_outbox():
    ctl, bot = control()
    for _ in range(50):
        run(ctl, STRANGER, "!relay help")
    assert 1 <= len(bot.notices) <= 5


def test_every_command_but_ask_has_a_handler():
    ctl, _ = control()
    assert set(ctl._handlers) == set(COMMANDS) - {"ask", "more"}


def test_set_follows_the_declared_bounds_and_the_context_budget():
    ctl, bot = control()
    run(ctl, ROOT, "!relay set top_k 5000")
    run(ctl, ROOT, "!relay set max_new_tokens 2047")
    run(ctl, ROOT, "!relay set max_new_tokens 2048")
    assert bot.actions == [
        ("set", "#chan", "top_k", 5000),
        ("set", "#chan", "max_new_tokens", 2047),
    ]
    assert bot.notices[-1] == (
        "whoever",
        "max_new_tokens must be smaller than model.context_tokens (2048)",
    )


def test_more_is_open_to_everyone_and_goes_to_the_conversation_it_was_asked_in():
    ctl, bot = control()
    ctl.handle(Message(STRANGER, "#chan", "!relay more", msgid="m1"), "#chan")
    run(ctl, STRANGER, "!relay more", channel=None)  # in a query: the query's answer
    run(ctl, STRANGER, "!relay more pm")
    assert bot.actions == [
        ("more", "#chan", "carol", "m1", False),
        ("more", "carol", "carol", None, False),
        ("more", "#chan", "carol", None, True),
    ]
    assert bot.notices == []


def test_set_persona_and_cast_are_one_persona():
    ctl, bot = control()
    run(ctl, ROOT, "!relay set persona a \x02pirate\x02 who loves rum")
    run(ctl, ROOT, "!relay set #other persona default")
    run(ctl, ROOT, "!relay cast a lighthouse keeper")
    run(ctl, ROOT, "!relay cast -")
    assert bot.actions == [
        ("cast", "#chan", "whoever", "a pirate who loves rum"),
        ("cast", "#other", "whoever", None),
        ("cast", "#chan", "whoever", "a lighthouse keeper"),
        ("cast", "#chan", "whoever", None),
    ]
    assert [text for _, text in bot.notices] == [
        "persona set in #chan",
        "persona removed in #other",
        "persona set in #chan",
        "persona removed in #chan",
    ]


def test_a_persona_too_long_is_refused_with_its_length():
    ctl, bot = control()
    run(ctl, ROOT, "!relay set persona " + "x" * 301)
    run(ctl, ROOT, "!relay cast " + "y" * 400)
    run(ctl, ROOT, "!relay set persona")
    assert bot.actions == []
    assert [text for _, text in bot.notices] == [
        "a persona may be at most 300 characters; this one has 301",
        "a persona may be at most 300 characters; this one has 400",
        "usage: !relay set [#channel] <param> <value|default>",
    ]


def test_channel_operators_may_set_the_persona_of_their_own_channel_only():
    ctl, bot = control(dataclasses.replace(OPS, channel_ops=True))
    bot.status[("#chan", "carol")] = "@"
    run(ctl, STRANGER, "!relay set persona a vet")
    run(ctl, STRANGER, "!relay set #other persona a spy")
    assert bot.actions == [("cast", "#chan", "carol", "a vet")]


def _notices(bot: FakeBot) -> list[str]:
    return [text for _, text in bot.notices]


def test_model_per_channel_and_for_the_network():
    ctl, bot = control()
    run(ctl, ROOT, "!relay model")
    run(ctl, ROOT, "!relay model b")
    run(ctl, ROOT, "!relay model")
    run(ctl, ROOT, "!relay model #other")
    run(ctl, ROOT, "!relay model a", channel=None)  # in a query: the whole network
    run(ctl, ROOT, "!relay model #other", channel=None)
    run(ctl, ROOT, "!relay model default")
    assert bot.actions == [("model", "#chan", "b"), ("model", None, "a"), ("model", "#chan", None)]
    allowed = "a, b (the list is [model.remote] models in the config)"
    assert _notices(bot) == [
        f"model in #chan: a; allowed: {allowed}",
        "model in #chan is now b",
        f"model in #chan: b; allowed: {allowed}",
        f"model in #other: a; allowed: {allowed}",
        "model on network net is now a (channels with a model of their own keep it)",
        f"model in #other: a; allowed: {allowed}",
        "model in #chan is back to a",
    ]


def test_a_model_off_the_list_is_refused_naming_the_allowed_ones():
    ctl, bot = control()
    run(ctl, ROOT, "!relay model #chan c")
    run(ctl, ROOT, "!relay model b c")
    assert bot.actions == []
    assert _notices(bot) == [
        "model 'c' is not on the list; allowed: a, b (the list is [model.remote] models in the"
        " config)",
        "usage: !relay model [#channel] [name|default]",
    ]


@pytest.mark.parametrize(
    ("served", "reason", "shown"),
    [
        (ServedModels("local", "embedded", ()), LOCAL_KEEPS_ONE, "embedded"),
        (ServedModels("tgi", None, ()), TGI_SERVES_ONE, "the one the server runs"),
    ],
)
def test_engines_with_one_model_change_nothing_and_say_so(
    served: ServedModels, reason: str, shown: str
):
    ctl, bot = control()
    bot.served_models = served
    run(ctl, ROOT, "!relay model")
    run(ctl, ROOT, "!relay model b")
    run(ctl, ROOT, "!relay model default", channel=None)
    assert bot.actions == []
    assert _notices(bot) == [f"model in #chan: {shown}; {reason}", reason, reason]


def test_channel_operators_choose_for_their_channel_but_not_for_the_network():
    ctl, bot = control(dataclasses.replace(OPS, channel_ops=True))
    bot.status[("#chan", "carol")] = "@"
    run(ctl, STRANGER, "!relay model b")
    run(ctl, STRANGER, "!relay model #chan a", channel=None)  # from a query, naming it
    run(ctl, STRANGER, "!relay model b", channel=None)  # the whole network
    run(ctl, STRANGER, "!relay model #other b")
    assert bot.actions == [("model", "#chan", "b"), ("model", "#chan", "a")]
    assert _notices(bot)[-1] == "Sorry, model is for the bot's operators."
