"""The state store: where the bot's files go under `<state dir>/<network>/`, safe file names,
locking, atomic writes, moving unreadable files aside, and transcript exports. What the files
say is state_format.py's business."""

# The layout:
#
#     state.toml                   RuntimeState: joined and parted channels, mutes, casts,
#                                  per-channel settings, ignore masks, models chosen
#     contexts/<stem>.toml         one SavedContext per conversation; the real name is stored
#                                  inside, the file name is only a safe, hashed stand-in
#     exports/<stem>-<UTC>.jsonl   transcripts exported on request, one {"role", "content"} a line
#
# Every write is atomic (temp file in the same directory, fsync, rename, fsync the directory),
# so a crash leaves either the old file or the new one, never half of one. A file that cannot
# be understood is moved aside (never deleted) and logged, and loading returns defaults, so a
# bad file costs the bot its saved state but never its start.

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relaybot.bridge.state import RuntimeState, SavedContext
from relaybot.conversation.export import jsonl
from relaybot.conversation.formats import Turn
from relaybot.conversation.transcript import topic_line
from relaybot.files import fsync_dir, sweep_temps, write_atomically
from relaybot.log import get_logger
from relaybot.service.state_format import (
    StateFormatError,
    decode,
    encode_context,
    encode_runtime,
    parse_context,
    parse_runtime,
)

log = get_logger(component="state")

RUNTIME_FILE = "state.toml"
CONTEXTS_DIR = "contexts"
EXPORTS_DIR = "exports"

DIR_MODE = 0o700


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
            sweep_temps(self.root)
            try:
                doc = self._read(self.runtime_path)
                if doc is None:
                    log.debug("state_file_missing", path=str(self.runtime_path))
                    return RuntimeState()
                return parse_runtime(doc)
            except StateFormatError as exc:
                self._move_aside(self.runtime_path, str(exc))
                return RuntimeState()

    def save_runtime(self, state: RuntimeState) -> None:
        """Write `state` atomically. ValueError when it holds values that would not load back
        (a wrong type, a name IRC cannot carry); OSError when the disk refuses."""
        data = encode_runtime(state)
        with self._lock:
            self._make_dirs(self.root)
            write_atomically(self.runtime_path, data)

    # contexts

    def load_contexts(self) -> dict[str, SavedContext]:
        """Every saved context that can be read, keyed by the name stored inside it."""
        with self._lock:
            if not self.contexts_dir.is_dir():
                return {}
            sweep_temps(self.contexts_dir)
            contexts: dict[str, SavedContext] = {}
            for path in sorted(self.contexts_dir.glob("*.toml")):
                try:
                    doc = self._read(path)
                    if doc is None:  # removed while we were listing
                        continue
                    ctx = parse_context(doc)
                    # A hand-renamed or copied file would shadow or outlive the real one:
                    # save and delete only ever touch the name's own file.
                    if path.name != self.context_path(ctx.name).name:
                        raise StateFormatError(
                            f"file name does not match the conversation stored inside "
                            f"({ctx.name!r} belongs in {self.context_path(ctx.name).name})"
                        )
                except StateFormatError as exc:
                    self._move_aside(path, str(exc))
                    continue
                contexts[ctx.name] = ctx
            return contexts

    def save_context(self, ctx: SavedContext) -> None:
        """Write one context atomically (ValueError / OSError as for save_runtime)."""
        if not ctx.name:
            raise ValueError("a saved context needs a name")
        data = encode_context(ctx)
        with self._lock:
            self._make_dirs(self.contexts_dir)
            write_atomically(self.context_path(ctx.name), data)

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
            fsync_dir(path.parent)

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
            write_atomically(path, data)
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
            raise StateFormatError(f"cannot read the file: {exc.strerror or exc}") from None
        return decode(raw)

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
        fsync_dir(path.parent)
        log.error("state_file_corrupt", path=str(path), problem=problem, moved_to=str(target))
