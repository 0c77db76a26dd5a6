"""The state file format: TOML documents <-> `RuntimeState` / `SavedContext` values, with the
validation that turns a damaged or hand-edited file into a `StateFormatError` naming the problem.
Pure: no file system; persistence.py decides where the bytes go."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tomli_w

from relaybot.bridge.state import RuntimeState, SavedContext
from relaybot.config.channel_settings import CHANNEL_SETTINGS, ChannelSettings
from relaybot.conversation.formats import Turn

FORMAT_VERSION = 1


class StateFormatError(Exception):
    """A file's content is not what the store writes; the message says what is wrong."""


# IRC cannot carry these inside a channel name or mask; a name holding one came from a
# damaged or mistyped file and would otherwise end up inside a JOIN line.
_BAD_CHANNEL_CHARS = frozenset(" ,\x00\x07\r\n")
_BAD_MASK_CHARS = frozenset(" \x00\r\n")


def _kind_name(value: object) -> str:
    return type(value).__name__


def _check_version(doc: Mapping[str, Any]) -> None:
    if "version" not in doc:
        raise StateFormatError("missing key 'version'")
    version = doc["version"]
    if type(version) is not int:
        raise StateFormatError(f"version must be an integer, not {_kind_name(version)}")
    if version > FORMAT_VERSION:
        raise StateFormatError(
            f"version {version} is newer than this relaybot understands (it reads version "
            f"{FORMAT_VERSION}); was it written by a newer release?"
        )
    if version < 1:
        raise StateFormatError(f"version {version} is not a valid version")


def _only_keys(doc: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(doc) - set(allowed))
    if extra:
        raise StateFormatError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}")


def _required(doc: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in doc:
        raise StateFormatError(f"{where}missing key {key!r}")
    return doc[key]


def _name(value: object, where: str, bad: frozenset[str]) -> str:
    if not isinstance(value, str):
        raise StateFormatError(f"{where} must be a string, not {_kind_name(value)}")
    if not value:
        raise StateFormatError(f"{where} must not be empty")
    if any(ch in bad for ch in value):
        raise StateFormatError(f"{where} {value!r} contains a character IRC cannot carry")
    return value


def _names(value: object, where: str, bad: frozenset[str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise StateFormatError(f"{where} must be an array of strings, not {_kind_name(value)}")
    return tuple(_name(item, f"{where}[{i}]", bad) for i, item in enumerate(value))


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateFormatError(f"{where} must be a table, not {_kind_name(value)}")
    return value


def _number(value: object, where: str, *, finite: bool) -> float:
    # bool is an int subclass; `true` is not a time or a temperature.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateFormatError(f"{where} must be a number, not {_kind_name(value)}")
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)):
        raise StateFormatError(f"{where} must be a finite number, not {value!r}")
    return number


def _channel_settings(value: object, where: str) -> ChannelSettings:
    table = _table(value, where)
    _only_keys(table, CHANNEL_SETTINGS, where)
    settings = ChannelSettings()
    for name, item in table.items():
        # bool is an int subclass and an int is no float: name the kind the file has
        problem = CHANNEL_SETTINGS[name].problem(item)
        if problem is not None:
            raise StateFormatError(f"{where}.{name} {problem}, not {_kind_name(item)} {item!r}")
        settings = settings.with_value(name, item)
    return settings


_RUNTIME_KEYS = ("version", "joined", "parted", "ignores", "mutes", "casts", "settings")
# Keys added to version 1 later, written only when they hold something: a file without them
# is an older one (or one with nothing chosen), and stays readable by the releases before.
_OPTIONAL_RUNTIME_KEYS = ("model", "models")
# A model name goes into a JSON body and an IRC notice: one printable word.
_BAD_MODEL_CHARS = frozenset(" \t\x00\r\n")


def _models(doc: Mapping[str, Any]) -> tuple[str | None, dict[str, str]]:
    model = doc.get("model")
    network = None if model is None else _name(model, "model", _BAD_MODEL_CHARS)
    models = {
        _name(key, "models key", _BAD_CHANNEL_CHARS): _name(
            value, f"models[{key!r}]", _BAD_MODEL_CHARS
        )
        for key, value in _table(doc.get("models", {}), "models").items()
    }
    return network, models


def parse_runtime(doc: Mapping[str, Any]) -> RuntimeState:
    _check_version(doc)
    _only_keys(doc, (*_RUNTIME_KEYS, *_OPTIONAL_RUNTIME_KEYS), "top level")
    for key in _RUNTIME_KEYS:
        _required(doc, key)
    mutes = {
        _name(key, "mutes key", _BAD_CHANNEL_CHARS): _number(
            value, f"mutes[{key!r}] (unix time the mute ends)", finite=False
        )
        for key, value in _table(doc["mutes"], "mutes").items()
    }
    casts: dict[str, str] = {}
    for key, value in _table(doc["casts"], "casts").items():
        if not isinstance(value, str):
            raise StateFormatError(f"casts[{key!r}] must be a string, not {_kind_name(value)}")
        casts[_name(key, "casts key", _BAD_CHANNEL_CHARS)] = value
    settings = {
        _name(key, "settings key", _BAD_CHANNEL_CHARS): _channel_settings(
            value, f"settings[{key!r}]"
        )
        for key, value in _table(doc["settings"], "settings").items()
    }
    model, models = _models(doc)
    return RuntimeState(
        joined=_names(doc["joined"], "joined", _BAD_CHANNEL_CHARS),
        parted=_names(doc["parted"], "parted", _BAD_CHANNEL_CHARS),
        mutes=mutes,
        casts=casts,
        settings=settings,
        ignores=_names(doc["ignores"], "ignores", _BAD_MASK_CHARS),
        model=model,
        models=models,
    )


def _runtime_doc(state: RuntimeState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "joined": list(state.joined),
        "parted": list(state.parted),
        "ignores": list(state.ignores),
        "mutes": dict(state.mutes),
        "casts": dict(state.casts),
        "settings": {key: value.as_dict() for key, value in state.settings.items()},
    }
    # TOML has no null: no model chosen is no key.
    if state.model is not None:
        doc["model"] = state.model
    if state.models:
        doc["models"] = dict(state.models)
    return doc


def _turns(value: object, where: str) -> tuple[Turn, ...]:
    if not isinstance(value, list):
        raise StateFormatError(f"{where} must be an array of tables, not {_kind_name(value)}")
    turns = []
    for i, item in enumerate(value):
        table = _table(item, f"{where}[{i}]")
        _only_keys(table, ("role", "content"), f"{where}[{i}]")
        role = _required(table, "role", f"{where}[{i}]: ")
        content = _required(table, "content", f"{where}[{i}]: ")
        if not isinstance(role, str) or not isinstance(content, str):
            raise StateFormatError(f"{where}[{i}]: role and content must be strings")
        turns.append(Turn(role, content))
    return tuple(turns)


_CONTEXT_KEYS = ("version", "name", "saved_at", "topic", "header", "turns")


def parse_context(doc: Mapping[str, Any]) -> SavedContext:
    _check_version(doc)
    _only_keys(doc, _CONTEXT_KEYS, "top level")
    name = _required(doc, "name")
    if not isinstance(name, str) or not name:
        raise StateFormatError("name must be a non-empty string")
    # TOML has no null: a context without a topic simply has no `topic` key.
    topic = doc.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise StateFormatError(f"topic must be a string, not {_kind_name(topic)}")
    return SavedContext(
        name=name,
        header=_turns(_required(doc, "header"), "header"),
        topic=topic,
        turns=_turns(_required(doc, "turns"), "turns"),
        saved_at=_number(_required(doc, "saved_at"), "saved_at", finite=True),
    )


def _context_doc(ctx: SavedContext) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": FORMAT_VERSION, "name": ctx.name, "saved_at": ctx.saved_at}
    if ctx.topic is not None:
        doc["topic"] = ctx.topic
    doc["header"] = [{"role": t.role, "content": t.content} for t in ctx.header]
    doc["turns"] = [{"role": t.role, "content": t.content} for t in ctx.turns]
    return doc


def _encode(doc: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], object]) -> bytes:
    """TOML bytes for `doc`, refused unless loading them back would succeed: never write a
    file that the next start would have to move aside."""
    try:
        text = tomli_w.dumps(dict(doc))
        parse(tomllib.loads(text))
        return text.encode("utf-8")
    except StateFormatError as exc:
        raise ValueError(f"refusing to save state that would not load back: {exc}") from None
    except (TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"refusing to save state that TOML cannot hold: {exc}") from None


def encode_runtime(state: RuntimeState) -> bytes:
    """`state.toml` bytes for `state`; ValueError when they would not load back."""
    return _encode(_runtime_doc(state), parse_runtime)


def encode_context(ctx: SavedContext) -> bytes:
    """A context file's bytes for `ctx`; ValueError when they would not load back."""
    return _encode(_context_doc(ctx), parse_context)


def decode(raw: bytes) -> dict[str, Any]:
    """The TOML document in a file's bytes; StateFormatError when it is not UTF-8 TOML."""
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StateFormatError(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StateFormatError(f"not valid TOML: {exc}") from None
