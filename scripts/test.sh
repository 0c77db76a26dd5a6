#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check: ruff, mypy --strict on the package, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check relaybot tests
ruff format --check relaybot tests
mypy relaybot
bash scripts/verify-unit.sh || [ $? -eq 77 ]  # systemd unit; 77: skipped (no systemd-analyze)
bash scripts/verify-unit.sh systemd/relaybot@.service || [ $? -eq 77 ]  # the template unit
python -m pytest -q --durations=15 "$@"  # the slowest, to keep CI under its time
