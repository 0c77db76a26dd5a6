"""`relaybot` as a separate process for tests, and reading its JSON log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def bot_process(
    config: Path, log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`relaybot --config CONFIG` with stdout and stderr appended to `log_path`; killed on
    exit if the test left it running."""
    with log_path.open("a") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "relaybot", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def log_events(log_path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a bot process (other output, such as C++ warnings, skipped)."""
    lines = log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]
