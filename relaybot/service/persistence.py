"""State on disk: the operators' runtime state and each conversation's context, written and
read back.

This module owns everything the bot writes under `<state dir>/<network>/`:

    state.toml                   RuntimeState: joined and parted channels, mutes, casts,
                                 per-channel settings, ignore masks
    contexts/<stem>.toml         one SavedContext per conversation; the real name is stored
                                 inside, the file name is only a safe, hashed stand-in
    exports/<stem>-<UTC>.jsonl   transcripts exported on request, one {"role", "content"} a line

Every write is atomic (temp file in the same directory, fsync, rename, fsync the directory),
so a crash leaves either the old file or the new one, never half of one. A file that cannot
be understood is moved aside (never deleted) and logged, and loading returns defaults, so a
bad file costs the bot its saved state but never its start.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from relaybot.bridge.state import RuntimeState, SavedContext
from relaybot.config.channel_settings import CHANNEL_SETTINGS, ChannelSettings
from relaybot.conversation.export import jsonl
from relaybot.conversation.formats import Turn
from relaybot.conversation.transcript import topic_line
from relaybot.log import get_logger

log = get_logger(component="state")

FORMAT_VERSION = 1
RUNTIME_FILE = "state.toml"
CONTEXTS_DIR = "contexts"
EXPORTS_DIR = "exports"

DIR_MODE = 0o700
FILE_MODE = 0o600
# Temp files end in this suffix (not `.toml`), so a crash mid-write never leaves a file that
# loading would pick up, and the leftovers can be recognised and swept.
_TEMP_SUFFIX = ".partial"


# --- validation -------------------------------------------------------------------------------


class _Corrupt(Exception):
    """A file's content is not what this module writes; the message says what is wrong."""


# IRC cannot carry these inside a channel name or mask; a name holding one came from a
# damaged or mistyped file and would otherwise end up inside a JOIN line.
_BAD_CHANNEL_CHARS = frozenset(" ,\x00\x07\r\n")
_BAD_MASK_CHARS = frozenset(" \x00\r\n")


def _kind_name(value: object) -> str:
    return type(value).__name__


def _check_version(doc: Mapping[str, Any]) -> None:
    if "version" not in doc:
        raise _Corrupt("missing key 'version'")
    version = doc["version"]
    if type(version) is not int:
        raise _Corrupt(f"version must be an integer, not {_kind_name(version)}")
    if version > FORMAT_VERSION:
        raise _Corrupt(
            f"version {version} is newer than this relaybot understands (it reads version "
            f"{FORMAT_VERSION}); was it written by a newer release?"
        )
    if version < 1:
        raise _Corrupt(f"version {version} is not a valid version")


def _only_keys(doc: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(doc) - set(allowed))
    if extra:
        raise _Corrupt(f"{where}: unknown key(s) {', '.join(map(repr, extra))}")


def _required(doc: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in doc:
        raise _Corrupt(f"{where}missing key {key!r}")
    return doc[key]


def _name(value: object, where: str, bad: frozenset[str]) -> str:
    if not isinstance(value, str):
        raise _Corrupt(f"{where} must be a string, not {_kind_name(value)}")
    if not value:
        raise _Corrupt(f"{where} must not be empty")
    if any(ch in bad for ch in value):
        raise _Corrupt(f"{where} {value!r} contains a character IRC cannot carry")
    return value


def _names(value: object, where: str, bad: frozenset[str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Corrupt(f"{where} must be an array of strings, not {_kind_name(value)}")
    return tuple(_name(item, f"{where}[{i}]", bad) for i, item in enumerate(value))


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Corrupt(f"{where} must be a table, not {_kind_name(value)}")
    return value


def _number(value: object, where: str, *, finite: bool) -> float:
    # bool is an int subclass; `true` is not a time or a temperature.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Corrupt(f"{where} must be a number, not {_kind_name(value)}")
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)):
        raise _Corrupt(f"{where} must be a finite number, not {value!r}")
    return number


def _channel_settings(value: object, where: str) -> ChannelSettings:
    table = _table(value, where)
    _only_keys(table, CHANNEL_SETTINGS, where)
    settings = ChannelSettings()
    for name, item in table.items():
        # bool is an int subclass and an int is no float: name the kind the file has
        problem = CHANNEL_SETTINGS[name].problem(item)
        if problem is not None:
            raise _Corrupt(f"{where}.{name} {problem}, not {_kind_name(item)} {item!r}")
        settings = settings.with_value(name, item)
    return settings


_RUNTIME_KEYS = ("version", "joined", "parted", "ignores", "mutes", "casts", "settings")


def _parse_runtime(doc: Mapping[str, Any]) -> RuntimeState:
    _check_version(doc)
    _only_keys(doc, _RUNTIME_KEYS, "top level")
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
            raise _Corrupt(f"casts[{key!r}] must be a string, not {_kind_name(value)}")
        casts[_name(key, "casts key", _BAD_CHANNEL_CHARS)] = value
    settings = {
        _name(key, "settings key", _BAD_CHANNEL_CHARS): _channel_settings(
            value, f"settings[{key!r}]"
        )
        for key, value in _table(doc["settings"], "settings").items()
    }
    return RuntimeState(
        joined=_names(doc["joined"], "joined", _BAD_CHANNEL_CHARS),
        parted=_names(doc["parted"], "parted", _BAD_CHANNEL_CHARS),
        mutes=mutes,
        casts=casts,
        settings=settings,
        ignores=_names(doc["ignores"], "ignores", _BAD_MASK_CHARS),
    )


def _runtime_doc(state: RuntimeState) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "joined": list(state.joined),
        "parted": list(state.parted),
        "ignores": list(state.ignores),
        "mutes": dict(state.mutes),
        "casts": dict(state.casts),
        "settings": {key: value.as_dict() for key, value in state.settings.items()},
    }


def _turns(value: object, where: str) -> tuple[Turn, ...]:
    if not isinstance(value, list):
        raise _Corrupt(f"{where} must be an array of tables, not {_kind_name(value)}")
    turns = []
    for i, item in enumerate(value):
        table = _table(item, f"{where}[{i}]")
        _only_keys(table, ("role", "content"), f"{where}[{i}]")
        role = _required(table, "role", f"{where}[{i}]: ")
        content = _required(table, "content", f"{where}[{i}]: ")
        if not isinstance(role, str) or not isinstance(content, str):
            raise _Corrupt(f"{where}[{i}]: role and content must be strings")
        turns.append(Turn(role, content))
    return tuple(turns)


_CONTEXT_KEYS = ("version", "name", "saved_at", "topic", "header", "turns")


def _parse_context(doc: Mapping[str, Any]) -> SavedContext:
    _check_version(doc)
    _only_keys(doc, _CONTEXT_KEYS, "top level")
    name = _required(doc, "name")
    if not isinstance(name, str) or not name:
        raise _Corrupt("name must be a non-empty string")
    # TOML has no null: a context without a topic simply has no `topic` key.
    topic = doc.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise _Corrupt(f"topic must be a string, not {_kind_name(topic)}")
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
    except _Corrupt as exc:
        raise ValueError(f"refusing to save state that would not load back: {exc}") from None
    except (TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"refusing to save state that TOML cannot hold: {exc}") from None


# --- file names -------------------------------------------------------------------------------

_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_PLAIN_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def safe_stem(name: str) -> str:
    """A file-name stem for any conversation name: a readable ASCII slug plus a hash of the
    exact name. The hash keeps names that differ only by case, or by characters the slug
    drops, apart (also on case-insensitive file systems); the slug never holds `/`, `.` or
    anything else a file system treats specially."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    slug = _SLUG_DROP.sub("_", name.lower()).strip("_")[:40].strip("_")
    return f"{slug}-{digest}" if slug else digest


def network_dir_name(network: str) -> str:
    """The network's directory: its own name when that is plainly safe, else a hashed stem.
    The `_` prefix cannot start a plain name, so the two kinds never collide."""
    if _PLAIN_NETWORK.fullmatch(network):
        return network
    return f"_{safe_stem(network)}"


def _utc_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%SZ")


def _unused(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, … : the first that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _unused_export(directory: Path, stem: str) -> Path:
    candidate, n = directory / f"{stem}.jsonl", 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = directory / f"{stem}-{n}.jsonl"
    return candidate


# --- atomic files -----------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable. Best effort: not every platform or file system allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    # The temp file lives beside the target so os.replace is a same-file-system rename.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


def _sweep_temps(directory: Path) -> None:
    """Remove temp files a crash left mid-write; the files they were replacing are intact."""
    with contextlib.suppress(OSError):
        for leftover in directory.glob(f".*{_TEMP_SUFFIX}"):
            if leftover.is_file() and not leftover.is_symlink():
                with contextlib.suppress(OSError):
                    leftover.unlink()


# --- the store --------------------------------------------------------------------------------


class StateStore:
    """One network's state files. Safe to call from several threads (one lock per store);
    one bot process per network directory is assumed."""

    def __init__(
        self, directory: Path, network: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.network = network
        self.root = self.directory / network_dir_name(network)
        self.runtime_path = self.root / RUNTIME_FILE
        self.contexts_dir = self.root / CONTEXTS_DIR
        self.exports_dir = self.root / EXPORTS_DIR
        self._clock = clock
        self._lock = threading.RLock()

    def context_path(self, name: str) -> Path:
        return self.contexts_dir / f"{safe_stem(name)}.toml"

    # runtime state

    def load_runtime(self) -> RuntimeState:
        """The saved runtime state; defaults when there is none or it cannot be read."""
        with self._lock:
            _sweep_temps(self.root)
            try:
                doc = self._read(self.runtime_path)
                if doc is None:
                    log.debug("state_file_missing", path=str(self.runtime_path))
                    return RuntimeState()
                return _parse_runtime(doc)
            except _Corrupt as exc:
                self._move_aside(self.runtime_path, str(exc))
                return RuntimeState()

    def save_runtime(self, state: RuntimeState) -> None:
        """Write `state` atomically. ValueError when it holds values that would not load back
        (a wrong type, a name IRC cannot carry); OSError when the disk refuses."""
        data = _encode(_runtime_doc(state), _parse_runtime)
        with self._lock:
            self._make_dirs(self.root)
            _atomic_write(self.runtime_path, data)

    # contexts

    def load_contexts(self) -> dict[str, SavedContext]:
        """Every saved context that can be read, keyed by the name stored inside it."""
        with self._lock:
            if not self.contexts_dir.is_dir():
                return {}
            _sweep_temps(self.contexts_dir)
            contexts: dict[str, SavedContext] = {}
            for path in sorted(self.contexts_dir.glob("*.toml")):
                try:
                    doc = self._read(path)
                    if doc is None:  # removed while we were listing
                        continue
                    ctx = _parse_context(doc)
                    # A hand-renamed or copied file would shadow or outlive the real one:
                    # save and delete only ever touch the name's own file.
                    if path.name != self.context_path(ctx.name).name:
                        raise _Corrupt(
                            f"file name does not match the conversation stored inside "
                            f"({ctx.name!r} belongs in {self.context_path(ctx.name).name})"
                        )
                except _Corrupt as exc:
                    self._move_aside(path, str(exc))
                    continue
                contexts[ctx.name] = ctx
            return contexts

    def save_context(self, ctx: SavedContext) -> None:
        """Write one context atomically (ValueError / OSError as for save_runtime)."""
        if not ctx.name:
            raise ValueError("a saved context needs a name")
        data = _encode(_context_doc(ctx), _parse_context)
        with self._lock:
            self._make_dirs(self.contexts_dir)
            _atomic_write(self.context_path(ctx.name), data)

    def save_contexts(self, contexts: Iterable[SavedContext]) -> None:
        for ctx in contexts:
            self.save_context(ctx)

    def delete_context(self, name: str) -> None:
        """Forget a conversation's saved context; nothing happens when there is none."""
        path = self.context_path(name)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _fsync_dir(path.parent)

    # exports

    def export_jsonl(
        self,
        name: str,
        header: Sequence[Turn],
        turns: Sequence[Turn],
        topic: Turn | str | None = None,
    ) -> Path:
        """Write a conversation as JSON lines (header, topic line, turns) and return the path.

        `topic` is the transcript's topic turn, or the bare topic text (made into the same
        `* Topic for … is: …` line the transcript uses)."""
        if isinstance(topic, str):
            topic = topic_line(name, topic)
        lines = [*header, *([topic] if topic is not None else []), *turns]
        data = jsonl(lines)
        with self._lock:
            self._make_dirs(self.exports_dir)
            path = _unused_export(
                self.exports_dir, f"{safe_stem(name)}-{_utc_stamp(self._clock())}"
            )
            _atomic_write(path, data)
        return path

    # helpers

    def _make_dirs(self, target: Path) -> None:
        """Create `target` and the store's directories above it, each private to the user."""
        missing = []
        current = target
        while not current.is_dir() and current.parent != current:
            missing.append(current)
            current = current.parent
        for directory in reversed(missing):
            # One level at a time, so every directory created here (parents of the state
            # directory included) gets the private mode, not just the last one.
            directory.mkdir(mode=DIR_MODE, exist_ok=True)
            # mkdir's mode is filtered through the umask; a directory we created is ours to
            # set exactly. Existing directories keep whatever mode the operator chose.
            os.chmod(directory, DIR_MODE)

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The parsed TOML at `path`; None when there is no file."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Corrupt(f"cannot read the file: {exc.strerror or exc}") from None
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _Corrupt(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
        except tomllib.TOMLDecodeError as exc:
            raise _Corrupt(f"not valid TOML: {exc}") from None

    def _move_aside(self, path: Path, problem: str) -> None:
        """Keep a bad file for a person to inspect, out of the way of the next save."""
        target = _unused(path.with_name(f"{path.name}.corrupt-{_utc_stamp(self._clock())}"))
        try:
            os.rename(path, target)
        except OSError as exc:
            log.error(
                "state_file_corrupt",
                path=str(path),
                problem=problem,
                moved_to=None,
                move_error=exc.strerror or str(exc),
            )
            return
        _fsync_dir(path.parent)
        log.error("state_file_corrupt", path=str(path), problem=problem, moved_to=str(target))
