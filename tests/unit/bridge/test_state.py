"""Unit tests for relaybot.bridge.state: runtime state and saved contexts are snapshots."""

from __future__ import annotations

import math

import pytest

from relaybot.bridge.state import RuntimeState
from relaybot.config.channel_settings import ChannelSettings


def test_runtime_state_is_a_snapshot() -> None:
    mutes = {"#a": 1.0}
    joined = ["#a"]
    state = RuntimeState(joined=joined, mutes=mutes)  # type: ignore[arg-type]
    mutes["#b"] = 2.0
    joined.append("#b")
    assert dict(state.mutes) == {"#a": 1.0}
    assert state.joined == ("#a",)
    with pytest.raises(TypeError):
        state.mutes["#c"] = 3.0  # type: ignore[index]


def test_runtime_state_helpers() -> None:
    state = RuntimeState().with_joined("#Foo").with_joined("#bar").with_joined("#FOO")
    assert state.joined == ("#FOO", "#bar")  # one entry, newest spelling, same place
    assert state.without_joined("#foo").joined == ("#bar",)
    state = state.with_parted("#x").with_ignore("*!*@a").with_ignore("*!*@A")
    assert state.parted == ("#x",)
    assert state.ignores == ("*!*@A",)
    assert state.without_parted("#X").parted == ()
    assert state.without_ignore("*!*@a").ignores == ()

    state = state.with_mute("#m").with_mute("#n", 5.0)
    assert dict(state.mutes) == {"#m": math.inf, "#n": 5.0}
    assert dict(state.without_mute("#m").mutes) == {"#n": 5.0}
    state = state.with_cast("#c", "bio")
    assert dict(state.casts) == {"#c": "bio"}
    assert dict(state.without_cast("#c").casts) == {}

    state = state.with_setting("#s", "top_k", 5).with_setting("#s", "chance", 0.5)
    assert state.settings["#s"] == ChannelSettings(top_k=5, chance=0.5)
    state = state.with_setting("#s", "top_k", None).with_setting("#s", "chance", None)
    assert "#s" not in state.settings  # no overrides left: no entry
    assert "#t" not in state.with_setting("#t", "top_k", 1).without_settings("#t").settings
