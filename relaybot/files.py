"""Files written whole or not at all: a crash mid-write leaves the old file as it was, never a
half-written one (the state store's files, the STS policies). Used by every layer that keeps a
file, so it sits beside `log` at the top of the package."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600
# Temp files end in this suffix (not the real file's), so a crash mid-write never leaves a file
# that loading would pick up, and the leftovers can be recognised and swept.
TEMP_SUFFIX = ".partial"


def fsync_dir(directory: Path) -> None:
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


def write_atomically(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` (private to its owner by default) in one rename."""
    # The temp file lives beside the target so os.replace is a same-file-system rename.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(path.parent)


def sweep_temps(directory: Path) -> None:
    """Remove temp files a crash left mid-write; the files they were replacing are intact."""
    with contextlib.suppress(OSError):
        for leftover in directory.glob(f".*{TEMP_SUFFIX}"):
            if leftover.is_file() and not leftover.is_symlink():
                with contextlib.suppress(OSError):
                    leftover.unlink()
