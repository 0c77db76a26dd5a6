"""Unit tests for relaybot.service.reload: what a reload joins, parts and leaves to a restart."""

from __future__ import annotations

from collections.abc import Callable

from relaybot.config.schema import Config
from relaybot.service.reload import plan_reload

BASE = """
[irc]
host = "irc.example.net"
nick = "relaybot"
{channels}
{extra}
"""


def configured(factory: Callable[[str], Config], *channels: str, extra: str = "") -> Config:
    tables = "\n".join(f'[[irc.channels]]\nname = "{name}"' for name in channels)
    # [[irc.channels]] tables must come last in [irc]; `extra` opens other sections.
    return factory(BASE.format(channels=tables, extra=extra))


def test_channels_added_and_removed(config_factory: Callable[[str], Config]) -> None:
    old = configured(config_factory, "#keep", "#gone")
    new = configured(config_factory, "#KEEP", "#new")
    plan = plan_reload(old, new, "default", operator_joined=(), operator_parted=(), fold=str.lower)
    assert [channel.name for channel in plan.join] == ["#new"]
    assert plan.part == ("#gone",)
    assert plan.needs_restart == ()
    assert plan.summary() == "config reloaded; joined #new, left #gone"


def test_operator_choices_win_over_the_config(config_factory: Callable[[str], Config]) -> None:
    old = configured(config_factory, "#gone")
    new = configured(config_factory, "#parted")
    plan = plan_reload(
        old,
        new,
        "default",
        operator_joined=("#GONE",),
        operator_parted=("#Parted",),
        fold=str.lower,
    )
    assert plan.join == ()  # an operator parted it: the config does not rejoin it
    assert plan.part == ()  # an operator joined it: it stays
    assert plan.summary() == "config reloaded"


def test_what_only_a_restart_applies(config_factory: Callable[[str], Config]) -> None:
    old = configured(config_factory, "#a")
    new = configured(config_factory, "#a", extra="[model]\nmax_new_tokens = 64\n")
    plan = plan_reload(old, new, "default", operator_joined=(), operator_parted=(), fold=str.lower)
    assert plan.needs_restart == ("model",)
    assert plan.summary() == "config reloaded; restart to apply: model"
    moved = configured(config_factory, "#a").networks[0].irc
    other_host = config_factory(BASE.format(channels="", extra="").replace("example", "other"))
    assert moved.host != other_host.networks[0].irc.host
    plan = plan_reload(
        old, other_host, "default", operator_joined=(), operator_parted=(), fold=str.lower
    )
    assert plan.needs_restart == ("irc connection",)
    assert plan.part == ("#a",)


def test_the_metrics_endpoint_changes_on_a_restart(config_factory: Callable[[str], Config]) -> None:
    old = configured(config_factory, "#a")
    new = configured(config_factory, "#a", extra="[metrics]\nenabled = true\n")
    plan = plan_reload(old, new, "default", operator_joined=(), operator_parted=(), fold=str.lower)
    assert plan.needs_restart == ("metrics",)
