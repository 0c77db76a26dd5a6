"""Unit tests for relaybot.bridge.operator_state: one owner for what operators change, each
change persisted once as a snapshot."""

from __future__ import annotations

import math

from relaybot.bridge.operator_state import Cast, OperatorState
from relaybot.bridge.state import RuntimeState
from relaybot.config.channel_settings import ChannelSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def make(state: RuntimeState | None = None) -> tuple[OperatorState, list[RuntimeState], Clock]:
    saved: list[RuntimeState] = []
    clock = Clock()
    return OperatorState(state, persist=saved.append, wall_clock=clock), saved, clock


def test_every_change_is_persisted_once_and_no_change_is_not() -> None:
    ops, saved, _ = make()
    ops.join("#Chat")
    ops.join("#Chat")  # already joined: nothing to save
    ops.ignore("spammer!*@*")
    assert saved == [
        RuntimeState(joined=("#Chat",)),
        RuntimeState(joined=("#Chat",), ignores=("spammer!*@*",)),
    ]
    assert ops.snapshot == saved[-1]
    assert ops.unignore("nobody") is False
    assert ops.unignore("SPAMMER!*@*") is True
    assert len(saved) == 3


def test_parting_a_configured_channel_keeps_it_parted() -> None:
    ops, _, _ = make(RuntimeState(joined=("#a", "#b")))
    ops.part("#a", configured=True)
    ops.part("#b", configured=False)
    assert ops.joined() == ()
    assert ops.parted() == ("#a",)
    ops.join("#A")
    assert ops.parted() == ()
    ops.forget_joined("#a")
    assert ops.joined() == ()


def test_a_mute_that_ran_out_is_dropped_and_persisted() -> None:
    ops, saved, clock = make()
    ops.mute("#chan", 60)
    ops.mute("#ever", math.inf)
    assert ops.muted_until("#chan") == 1_060.0
    clock.now = 1_060.0
    assert not ops.is_muted("#chan")
    assert ops.is_muted("#ever")
    assert saved[-1].mutes == {"#ever": math.inf}
    ops.unmute("#ever")
    assert saved[-1].mutes == {}


def test_settings_back_to_default_leave_no_entry() -> None:
    ops, saved, _ = make()
    ops.set_setting("#chan", "top_k", 5)
    assert ops.settings("#chan") == ChannelSettings(top_k=5)
    ops.set_setting("#chan", "top_k", None)
    assert ops.settings("#chan") == ChannelSettings()
    assert saved[-1].settings == {}


def test_casts_keep_the_caster_in_memory_and_the_clean_bio_on_disk() -> None:
    ops, saved, _ = make()
    ops.set_cast("#chan", "alice", "a poet\r\nQUIT :x")
    cast = ops.cast("#chan")
    assert cast is not None and cast.caster == "alice"
    assert "\r" not in cast.bio and "\n" not in cast.bio
    assert saved[-1].casts == {"#chan": cast.bio}
    ops.set_cast("#chan", "alice", None)
    assert ops.cast("#chan") is None


def test_a_restored_persona_names_its_caster_from_the_saved_context() -> None:
    ops, saved, _ = make(RuntimeState(casts={"#chan": "a pirate"}))
    assert ops.cast("#chan") == Cast("anon", "a pirate")
    ops.restore_caster("#chan", "bob")
    ops.restore_caster("#other", "bob")  # no persona there: nothing to name
    assert ops.cast("#chan") == Cast("bob", "a pirate")
    assert ops.cast("#other") is None
    assert saved == []  # restoring is not a change


def test_without_persist_the_state_lives_in_memory() -> None:
    ops = OperatorState()
    ops.mute("#chan", math.inf)
    assert ops.is_muted("#chan")


def test_a_channels_model_wins_over_the_networks() -> None:
    ops, saved, _ = make()
    assert ops.model_for("#chan") is None
    ops.set_model(None, "net-wide")
    ops.set_model("#chan", "chan-only")
    assert (ops.model_for("#chan"), ops.model_for("#other"), ops.model_for("alice")) == (
        "chan-only",
        "net-wide",
        "net-wide",
    )
    assert (ops.chosen_model(None), ops.chosen_model("#chan"), ops.chosen_model("#other")) == (
        "net-wide",
        "chan-only",
        None,
    )
    ops.set_model("#chan", None)
    assert ops.model_for("#chan") == "net-wide"
    assert saved[-1] == RuntimeState(model="net-wide")


def test_choices_no_longer_allowed_are_forgotten_and_persisted() -> None:
    ops, saved, _ = make(RuntimeState(model="gone", models={"#a": "kept", "#b": "gone"}))
    assert ops.keep_models(("kept", "other")) == ["(network): gone", "#b: gone"]
    assert ops.snapshot == RuntimeState(models={"#a": "kept"})
    assert saved == [ops.snapshot]
    assert ops.keep_models(("kept",)) == []
    assert len(saved) == 1
