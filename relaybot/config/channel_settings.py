"""The per-channel settings operators change with `set`, each declared once: its type, the
config key it overrides, its bounds and its help.

Everything else reads this declaration: the config loader takes the bounds of the keys these
settings override, the `set` command parses and checks against it and lists it in its help, the
state file is checked against it, and the bridge applies a channel's overrides through it.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

SettingValue = float | int | bool


def _setting(overrides: str, help: str, low: float | None = None, high: float | None = None) -> Any:
    return field(
        default=None, metadata={"overrides": overrides, "help": help, "low": low, "high": high}
    )


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """A channel's overrides; None means "use the config"."""

    temperature: float | None = _setting("model.temperature", "sampling temperature", 0.0, 5.0)
    top_p: float | None = _setting("model.top_p", "nucleus sampling mass", 0.0, 1.0)
    top_k: int | None = _setting("model.top_k", "sample from the k likeliest tokens (0: all)", 0)
    max_new_tokens: int | None = _setting(
        "model.max_new_tokens", "longest reply in tokens", 1, 4096
    )
    chance: float | None = _setting(
        "reply.chance", "probability of replying when not addressed", 0.0, 1.0
    )
    max_lines: int | None = _setting("reply.max_lines", "most IRC lines in one reply", 1, 20)
    on_mention: bool | None = _setting("reply.on_mention", "reply when addressed by nick")

    def with_value(self, name: str, value: SettingValue | None) -> ChannelSettings:
        """A copy with `name` set to `value` (None clears the override); ValueError names what
        is wrong with either."""
        spec = CHANNEL_SETTINGS.get(name)
        if spec is None:
            raise ValueError(f"unknown channel setting {name!r}")
        if value is not None and (problem := spec.problem(value)) is not None:
            raise ValueError(f"{name} {problem}")
        if value is not None and spec.kind is float:
            value = float(value)
        change: dict[str, Any] = {name: value}
        return replace(self, **change)

    def as_dict(self) -> dict[str, SettingValue]:
        """Only the overrides that are set."""
        values = {spec.name: getattr(self, spec.name) for spec in CHANNEL_SETTINGS.values()}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One per-channel setting as `ChannelSettings` declares it."""

    name: str
    kind: type[float] | type[int] | type[bool]
    overrides: str  # the config key, "section.key"
    help: str
    low: float | None
    high: float | None

    @property
    def section(self) -> str:
        return self.overrides.split(".", 1)[0]

    def bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        if self.low is not None:
            return f"at least {self.low:g}"
        return ""

    def problem(self, value: object) -> str | None:
        """What makes `value` unfit for this setting ("must be ..."), or None."""
        if self.kind is bool:
            return None if type(value) is bool else "must be on or off"
        if self.kind is int and type(value) is not int:
            return "must be an integer"
        if self.kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            return "must be a number"
        assert isinstance(value, int | float)
        if not math.isfinite(value):
            return "must be a finite number"
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return f"must be {self.bounds()}"
        return None


def _kind(annotation: object) -> type[float] | type[int] | type[bool]:
    # `float | None` -> float
    args = [arg for arg in typing.get_args(annotation) if arg is not types.NoneType]
    if len(args) != 1 or args[0] not in (float, int, bool):
        raise TypeError(f"a channel setting must be float, int or bool or None, not {annotation}")
    kind: type[float] | type[int] | type[bool] = args[0]
    return kind


def _specs() -> Mapping[str, SettingSpec]:
    hints = typing.get_type_hints(ChannelSettings)
    return MappingProxyType(
        {
            f.name: SettingSpec(
                name=f.name,
                kind=_kind(hints[f.name]),
                overrides=f.metadata["overrides"],
                help=f.metadata["help"],
                low=f.metadata["low"],
                high=f.metadata["high"],
            )
            for f in fields(ChannelSettings)
        }
    )


CHANNEL_SETTINGS: Mapping[str, SettingSpec] = _specs()


def spec_for(config_key: str) -> SettingSpec | None:
    """The setting that overrides `config_key` ("model.top_k"), if one does."""
    for spec in CHANNEL_SETTINGS.values():
        if spec.overrides == config_key:
            return spec
    return None
