"""`relaybot demo`, the README's first command: a local server, the bot, and a chat in the
terminal (driven here through a pipe)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ircservers import free_port

pytestmark = pytest.mark.integration


def test_demo_chat_gets_a_reply_and_operator_commands_work(
    tmp_path: Path,
    real_engine: object,  # warms the converted-model cache
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relaybot", "demo", "--port", str(free_port())],
        input="relaybot: hello, who are you?\n!relay status\n",
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("<relaybot> ") for line in lines), result.stdout
    assert any(line.startswith("-relaybot- network demo; model ") for line in lines), result.stdout
