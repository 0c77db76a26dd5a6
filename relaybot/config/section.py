"""The loader's reader for one TOML table: typed reads whose defaults come from the schema's
dataclasses, errors that name the key path, and secrets read from files or the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

from relaybot.config.channel_settings import spec_for
from relaybot.config.schema import ConfigError, Secret

T = TypeVar("T")

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def describe(value: object) -> str:
    """The TOML type of `value`, for "expected X, got Y"."""
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def declared_defaults(schema: type[Any]) -> dict[str, Any]:
    """The defaults a schema dataclass declares on its fields; a field without one is a key the
    file must give."""
    defaults: dict[str, Any] = {}
    for item in fields(schema):
        if item.default is not MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not MISSING:
            defaults[item.name] = item.default_factory()
    return defaults


def overridden_bounds(key: str) -> tuple[float, float | None]:
    """The bounds of a key a per-channel setting overrides: declared once, with the setting."""
    spec = spec_for(key)
    assert spec is not None and spec.low is not None, key
    return spec.low, spec.high


class Section:
    """Typed, path-aware reads from one TOML table; leftover keys are an error.

    A key the file leaves out reads as its entry in `defaults`: the schema's field defaults
    (`declared_defaults`, or the fields of the parent's default for this table), plus what
    `derive` adds. The reads never carry defaults of their own, so each is declared once.
    """

    def __init__(
        self, table: Mapping[str, Any], path: str, base_dir: Path, defaults: Mapping[str, Any]
    ) -> None:
        self.table = dict(table)
        self.path = path
        self.base_dir = base_dir
        self.defaults = dict(defaults)
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.key(name)}: {problem}")

    def resolve(self, value: str) -> Path:
        """A path as written in the config: `$VAR` and `~` expanded, relative to the file."""
        path = Path(os.path.expandvars(value)).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def has(self, name: str) -> bool:
        return name in self.table

    def derive(self, **defaults: Any) -> None:
        """Defaults that follow other keys (irc.port follows irc.tls, a model preset fills the
        sampling keys); call it before reading the keys it covers."""
        self.defaults.update(defaults)

    def default(self, name: str, kind: type[T]) -> T:
        """What `name` reads as when the file leaves it out."""
        value = self.defaults.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # as an integer written in the file reads
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            # A bug in the schema or the loader, not in the file.
            raise TypeError(f"{self.key(name)}: no {kind.__name__} default declared, {value!r}")
        return value

    def _optional_default(self, name: str, kind: type[T]) -> T | None:
        return None if self.defaults.get(name) is None else self.default(name, kind)

    def _read(self, name: str, kind: type[T]) -> T | None:
        """The value the file gives, checked against `kind`; None when it gives none."""
        self.used.add(name)
        if name not in self.table:
            return None
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(name, f"expected {_TYPE_NAMES[kind]}, got {describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf literals; no key means either (nan even passes range checks).
            raise self.fail(name, f"must be a finite number, got {value}")
        return value

    def get(self, name: str, kind: type[T]) -> T:
        """The value the file gives, else the default."""
        value = self._read(name, kind)
        return self.default(name, kind) if value is None else value

    def required(self, name: str, kind: type[T]) -> T:
        value = self._read(name, kind)
        if value is None:
            raise self.fail(name, "missing (required)")
        if isinstance(value, str) and not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        """A key whose default may be None."""
        value = self._read(name, kind)
        return self._optional_default(name, kind) if value is None else value

    def optional_str(self, name: str) -> str | None:
        """An optional string; an empty one reads as the default, like leaving it out."""
        return self._read(name, str) or self._optional_default(name, str)

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.get(name, str)
        if value not in options:
            raise self.fail(name, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def number(self, name: str, kind: type[T], low: float, high: float | None = None) -> T:
        value = self.get(name, kind)
        assert isinstance(value, int | float)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(name, f"must be {bound}, got {value}")
        return value

    def str_list(self, name: str) -> tuple[str, ...]:
        self.used.add(name)
        if name not in self.table:
            return self.default(name, tuple)
        value = self.table[name]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(name, f"expected an array of strings, got {describe(value)}")
        return tuple(value)

    def raw(self, name: str) -> object:
        """The value as written, for the caller to check itself; None when left out."""
        self.used.add(name)
        return self.table.get(name)

    def _table(self, name: str) -> Mapping[str, Any] | None:
        self.used.add(name)
        if name not in self.table:
            return None
        value = self.table[name]
        if not isinstance(value, dict):
            raise self.fail(name, f"expected a table, got {describe(value)}")
        return value

    def sub(self, name: str, schema: type[Any]) -> Section | None:
        """The table `name`, or None when left out; its keys default as `schema` declares."""
        table = self._table(name)
        if table is None:
            return None
        return Section(table, self.key(name), self.base_dir, declared_defaults(schema))

    def sub_or_empty(self, name: str) -> Section:
        """The table `name`, read as empty when left out. Its keys default to the fields of the
        default declared for the table itself: `[irc.flood]`'s to those of `IrcConfig.flood`."""
        default = self.defaults[name]
        defaults = {item.name: getattr(default, item.name) for item in fields(default)}
        return Section(self._table(name) or {}, self.key(name), self.base_dir, defaults)

    def file(self, name: str) -> str | None:
        """An optional file (CA bundle, certificate, key) that must exist and be readable."""
        value = self.optional_str(name)
        if value is None:
            return None
        path = self.resolve(value)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise self.fail(name, f"{path} is not a readable file")
        return str(path)

    def secret(self, name: str, required: bool = False) -> Secret | None:
        """A secret from `<name>_file` or `<name>_env`; an inline value is refused. Every
        secret's default is None: there is none unless the file points at one."""
        file_key, env_key = f"{name}_file", f"{name}_env"
        self.used.update({name, file_key, env_key})
        if name in self.table:
            raise self.fail(name, f"secrets are not accepted inline; use {file_key} or {env_key}")
        file_name = self._read(file_key, str)
        env_name = self._read(env_key, str)
        if file_name and env_name:
            raise self.fail(file_key, f"give either {file_key} or {env_key}, not both")
        if file_name:
            path = self.resolve(file_name)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise self.fail(file_key, f"cannot read {path}: {exc}") from None
            value = text.strip("\r\n")
            if not value:
                raise self.fail(file_key, f"{path} is empty")
            return Secret(value)
        if env_name:
            if not os.environ.get(env_name):
                raise self.fail(env_key, f"environment variable {env_name} is not set")
            return Secret(os.environ[env_name])
        if required:
            raise self.fail(file_key, f"missing (give {file_key} or {env_key})")
        return None

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")
