"""The state operators change at run time, and each conversation's saved context, as frozen
values: `RuntimeState` (joined and parted channels, ignores, mutes, personas, per-channel
settings, the served models chosen) and `SavedContext`. `relaybot.service.persistence` writes
and reads them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from relaybot.config.channel_settings import ChannelSettings, SettingValue
from relaybot.conversation.formats import Turn
from relaybot.conversation.transcript import Transcript

# --- values -----------------------------------------------------------------------------------


def _frozen_mapping() -> Mapping[Any, Any]:
    return MappingProxyType({})


def _folded_index(items: Sequence[str], value: str, fold: Callable[[str], str]) -> int | None:
    wanted = fold(value)
    return next((i for i, item in enumerate(items) if fold(item) == wanted), None)


def _with_item(items: tuple[str, ...], value: str, fold: Callable[[str], str]) -> tuple[str, ...]:
    index = _folded_index(items, value, fold)
    if index is None:
        return (*items, value)
    # Keep the position but take the newest spelling: the server's may have changed.
    return (*items[:index], value, *items[index + 1 :])


def _without_item(
    items: tuple[str, ...], value: str, fold: Callable[[str], str]
) -> tuple[str, ...]:
    wanted = fold(value)
    return tuple(item for item in items if fold(item) != wanted)


def _put(mapping: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**mapping, key: value}


def _drop(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """Operator changes that must survive a restart. Immutable: the `with_…` helpers copy.

    Mapping keys are stored exactly as given (callers pass casefolded channel names). The
    tuple helpers compare with `fold` so "#Foo" and "#foo" are one entry; pass the server's
    casefolding to match IRC's idea of equality.
    """

    joined: tuple[str, ...] = ()
    parted: tuple[str, ...] = ()
    mutes: Mapping[str, float] = field(default_factory=_frozen_mapping)
    casts: Mapping[str, str] = field(default_factory=_frozen_mapping)
    settings: Mapping[str, ChannelSettings] = field(default_factory=_frozen_mapping)
    ignores: tuple[str, ...] = ()
    # The served model chosen with `!relay model` for the whole network, and per channel
    # (which wins); None / absent: the configured one.
    model: str | None = None
    models: Mapping[str, str] = field(default_factory=_frozen_mapping)

    def __post_init__(self) -> None:
        # Copy whatever the caller passed so later changes to their list or dict cannot
        # reach into a state that is meant to be a snapshot.
        for name in ("joined", "parted", "ignores"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("mutes", "casts", "settings", "models"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def with_joined(self, channel: str, fold: Callable[[str], str] = str.casefold) -> RuntimeState:
        return replace(self, joined=_with_item(self.joined, channel, fold))

    def without_joined(
        self, channel: str, fold: Callable[[str], str] = str.casefold
    ) -> RuntimeState:
        return replace(self, joined=_without_item(self.joined, channel, fold))

    def with_parted(self, channel: str, fold: Callable[[str], str] = str.casefold) -> RuntimeState:
        return replace(self, parted=_with_item(self.parted, channel, fold))

    def without_parted(
        self, channel: str, fold: Callable[[str], str] = str.casefold
    ) -> RuntimeState:
        return replace(self, parted=_without_item(self.parted, channel, fold))

    def with_ignore(self, mask: str, fold: Callable[[str], str] = str.casefold) -> RuntimeState:
        return replace(self, ignores=_with_item(self.ignores, mask, fold))

    def without_ignore(self, mask: str, fold: Callable[[str], str] = str.casefold) -> RuntimeState:
        return replace(self, ignores=_without_item(self.ignores, mask, fold))

    def with_mute(self, channel: str, until: float = math.inf) -> RuntimeState:
        return replace(self, mutes=_put(self.mutes, channel, until))

    def without_mute(self, channel: str) -> RuntimeState:
        return replace(self, mutes=_drop(self.mutes, channel))

    def with_cast(self, channel: str, bio: str) -> RuntimeState:
        return replace(self, casts=_put(self.casts, channel, bio))

    def without_cast(self, channel: str) -> RuntimeState:
        return replace(self, casts=_drop(self.casts, channel))

    def with_setting(self, channel: str, name: str, value: SettingValue | None) -> RuntimeState:
        """Set (or with None, clear) one override; a channel left with none is dropped."""
        updated = self.settings.get(channel, ChannelSettings()).with_value(name, value)
        if not updated.as_dict():
            return replace(self, settings=_drop(self.settings, channel))
        return replace(self, settings=_put(self.settings, channel, updated))

    def without_settings(self, channel: str) -> RuntimeState:
        return replace(self, settings=_drop(self.settings, channel))

    def with_model(self, channel: str | None, name: str) -> RuntimeState:
        """`name` chosen for `channel`, or with None for the whole network."""
        if channel is None:
            return replace(self, model=name)
        return replace(self, models=_put(self.models, channel, name))

    def without_model(self, channel: str | None) -> RuntimeState:
        if channel is None:
            return replace(self, model=None)
        return replace(self, models=_drop(self.models, channel))


@dataclass(frozen=True, slots=True)
class SavedContext:
    """One conversation's context as saved: plain values, no token counts."""

    name: str  # channel as the server spells it, or the peer's nick for a query
    header: tuple[Turn, ...] = ()
    topic: str | None = None
    turns: tuple[Turn, ...] = ()
    saved_at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", tuple(self.header))
        object.__setattr__(self, "turns", tuple(self.turns))


def saved_context(transcript: Transcript, now: float) -> SavedContext:
    """A conversation's context as plain values, for the state store."""
    topic = transcript.topic.content if transcript.topic else None
    prefix = f"* Topic for {transcript.name} is: "
    return SavedContext(
        name=transcript.name,
        header=tuple(transcript.header),
        topic=topic[len(prefix) :] if topic and topic.startswith(prefix) else None,
        turns=tuple(transcript.turns),
        saved_at=now,
    )
