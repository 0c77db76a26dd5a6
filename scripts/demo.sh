#!/usr/bin/env bash
# Set up (scripts/setup.sh) and start the demo: a local IRC server, the bot on the embedded
# model in #relay, and a terminal chat. Extra arguments go to `relaybot demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/relaybot demo "$@"
