"""Unit tests for relaybot.config.channel_settings: the one declaration of per-channel settings,
and the config loader, `set` and the state file all holding to it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from relaybot.config.channel_settings import CHANNEL_SETTINGS, ChannelSettings, spec_for
from relaybot.config.schema import Config, ConfigError
from relaybot.control.commands import CommandError, parse_setting

BASE = """
[irc]
host = "irc.example.net"
nick = "relaybot"
"""


def test_the_table_is_the_dataclass() -> None:
    assert list(CHANNEL_SETTINGS) == [f.name for f in dataclasses.fields(ChannelSettings)]
    kinds = {name: spec.kind for name, spec in CHANNEL_SETTINGS.items()}
    assert kinds == {
        "temperature": float,
        "top_p": float,
        "top_k": int,
        "max_new_tokens": int,
        "chance": float,
        "max_lines": int,
        "on_mention": bool,
    }
    assert spec_for("model.top_k") is CHANNEL_SETTINGS["top_k"]
    assert spec_for("model.seed") is None


def test_channel_settings_with_value_and_as_dict() -> None:
    base = ChannelSettings()
    assert base.as_dict() == {}
    tuned = base.with_value("temperature", 0.5).with_value("on_mention", True)
    assert tuned.as_dict() == {"temperature": 0.5, "on_mention": True}
    assert base.as_dict() == {}  # the original is untouched
    assert tuned.with_value("temperature", None).as_dict() == {"on_mention": True}
    with pytest.raises(ValueError, match="unknown channel setting"):
        base.with_value("volume", 11)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("top_k", 1.5, "top_k must be an integer"),
        ("top_k", True, "top_k must be an integer"),
        ("on_mention", 1, "on_mention must be on or off"),
        ("temperature", "hot", "temperature must be a number"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("temperature", 5.5, "temperature must be between 0 and 5"),
        ("max_new_tokens", 0, "max_new_tokens must be between 1 and 4096"),
    ],
)
def test_with_value_refuses_what_the_declaration_refuses(
    name: str, value: object, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        ChannelSettings().with_value(name, value)  # type: ignore[arg-type]


def test_a_whole_number_for_a_float_setting_is_kept_as_a_float() -> None:
    settings = ChannelSettings().with_value("temperature", 1)
    assert settings.temperature == 1.0
    assert type(settings.temperature) is float


def _config_value(spec_name: str, value: float) -> str:
    spec = CHANNEL_SETTINGS[spec_name]
    text = repr(float(value)) if spec.kind is float else str(int(value))
    # room for the longest reply: model.max_new_tokens must stay under the context
    room = "context_tokens = 8192\n" if spec.section == "model" else ""
    return f"{BASE}\n[{spec.section}]\n{room}{spec.overrides.split('.', 1)[1]} = {text}\n"


NUMERIC = [name for name, spec in CHANNEL_SETTINGS.items() if spec.kind is not bool]


@pytest.mark.parametrize("name", NUMERIC)
def test_config_and_set_accept_and_refuse_the_same_bounds(
    name: str, config_factory: Callable[[str], Config]
) -> None:
    spec = CHANNEL_SETTINGS[name]
    assert spec.low is not None
    edges = [spec.low] + ([spec.high] if spec.high is not None else [])
    for edge in edges:
        config_factory(_config_value(name, edge))  # loads
        assert parse_setting(name, str(edge if spec.kind is float else int(edge))) == edge
    step = 0.5 if spec.kind is float else 1
    outside = [spec.low - step] + ([spec.high + step] if spec.high is not None else [])
    for value in outside:
        with pytest.raises(ConfigError, match=rf"^{spec.section}\.{name}: must be"):
            config_factory(_config_value(name, value))
        shown = str(value if spec.kind is float else int(value))
        assert isinstance(parse_setting(name, shown), CommandError)
