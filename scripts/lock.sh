#!/usr/bin/env bash
# Regenerate requirements/lock.txt, the exact versions that setup.sh installs and CI tests.
# Run scripts/test-latest.sh first: refresh the lock only to versions that pass the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/python" -m pip install -q "pip-tools==7.6.2"
# --find-links: the CPU build of torch that requirements/pins.in asks for lies there on the
# project's machines; from the plain index the resolver would lock CUDA packages too.
"$tools/bin/pip-compile" --quiet --extra dev --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links --find-links "${TORCH_WHEELS:-/opt/wheels}" \
  --output-file requirements/lock.txt pyproject.toml requirements/pins.in
# The dev extra names relaybot's own extras; the package itself is installed editable.
sed -i '/^relaybot @ /d' requirements/lock.txt
echo "lock: $(grep -c '==' requirements/lock.txt) pins in requirements/lock.txt"
