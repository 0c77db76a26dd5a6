#!/usr/bin/env bash
# Check the systemd unit with `systemd-analyze verify`; exit non-zero on any warning about it.
#
#   bash scripts/verify-unit.sh [UNIT_FILE]        (default: systemd/relaybot.service)
#
# A template unit (relaybot@.service) is checked as one of its instances, relaybot@example.
# `verify` insists that ExecStart='s program exists, so it checks a temporary copy whose
# ExecStart= runs this checkout's .venv/bin/relaybot instead of /usr/local/bin/relaybot (the
# shipped unit keeps that path). Example directives in the unit, written `#Key=value` with no
# space after the #, are checked too, in a second copy with them uncommented. Then
# `systemd-analyze security --offline` scores the sandbox and fails above MAX_EXPOSURE.
#
# `verify` exits 0 after most warnings (an unknown key, a value it cannot parse: "..., ignoring"),
# so its output is read too: every line fails the check unless it is clearly about this machine
# rather than the unit (see is_environment below).
#
# Exit status: 0 clean; 1 problems in the unit; 2 cannot check (no .venv: run
# scripts/setup.sh); 77 skipped: systemd-analyze is missing and cannot be installed here (not
# root, or no apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

unit=${1:-systemd/relaybot.service}
shipped_exec=/usr/local/bin/relaybot
binary=$PWD/.venv/bin/relaybot
# systemd-analyze security's scale is 0-100 here (it prints a tenth: 1.8 for 18).
MAX_EXPOSURE=${MAX_EXPOSURE:-30}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "verify-unit: SKIPPED: systemd-analyze is not installed and this is not root; run" \
      "this script as root (it installs Debian's systemd package), or install systemd" >&2
    exit 77
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "verify-unit: SKIPPED: systemd-analyze is not installed and there is no apt-get to" \
      "install it with; install systemd (it ships systemd-analyze)" >&2
    exit 77
  fi
  echo "verify-unit: installing systemd-analyze (Debian package systemd)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if [ ! -x "$binary" ]; then
  echo "verify-unit: $binary is missing: run scripts/setup.sh first" >&2
  exit 2
fi
if ! grep -q "^ExecStart=$shipped_exec " "$unit"; then
  echo "verify-unit: $unit: ExecStart= must run $shipped_exec (the documented install path)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/relaybot-verify.XXXXXX")
trap 'rm -rf "$work"' EXIT
# ExecStart= cannot take a path with spaces unquoted: point at a symlink with a plain path.
mkdir "$work/bin" "$work/shipped" "$work/examples"
ln -s "$binary" "$work/bin/relaybot"
name=$(basename "$unit")
name=${name/@.service/@example.service}  # a template is verified as one of its instances
sed "s#^ExecStart=$shipped_exec #ExecStart=$work/bin/relaybot #" "$unit" \
  >"$work/shipped/$name"
sed -E 's/^#([A-Za-z][A-Za-z0-9]*=)/\1/' "$work/shipped/$name" \
  >"$work/examples/$name"

# Output that is about this machine, not about the unit: warnings about other unit files that
# `verify` loads as dependencies (network-online.target, multi-user.target and whatever this
# host has installed), named by path or by unit name, and messages from a container without a
# running systemd. Anything that names relaybot.service or the copy under test never matches.
unit_types='(service|socket|target|mount|automount|swap|timer|path|slice|scope|device)'
other_unit_file="^/[^: ]+\\.$unit_types(\\.d/[^: ]+)?:"
other_unit_name="^[A-Za-z0-9@._:-]+\\.$unit_types: "
no_systemd='^(System has not been booted with systemd|Failed to connect to bus|Running in chroot)'
is_environment() {
  local line=$1
  case $line in
    *relaybot.service* | *relaybot@* | *"$work"*) return 1 ;;
  esac
  [[ $line =~ $other_unit_file || $line =~ $other_unit_name || $line =~ $no_systemd ]]
}

# --man=no: whether man pages named by Documentation= are installed is about this machine.
# --recursive-errors=one (systemd >= 250): the exit status is about this unit only, not about
# the host's units it pulls in (their warnings are still read, and filtered, below).
options=(--man=no)
if systemd-analyze --help 2>/dev/null | grep -q -- '--recursive-errors'; then
  options+=(--recursive-errors=one)
fi

status=0
check() {  # check LABEL UNIT_FILE
  local label=$1 file=$2 output rc=0 line problems=0 seen
  output=$(systemd-analyze verify "${options[@]}" "$file" 2>&1) || rc=$?
  # Names relative to the temporary directory; and verify can print a warning twice (the
  # unit is loaded twice): show each line once.
  seen=$(printf '%s\n' "$output" | sed "s#$work/[a-z]*/\(relaybot[@a-z]*.service\)#\1#g" \
    | awk '!seen[$0]++')
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    if is_environment "$line"; then
      echo "verify-unit: ($label) ignored, about this machine: $line" >&2
    else
      echo "verify-unit: ($label) $line" >&2
      problems=$((problems + 1))
    fi
  done <<<"$seen"
  if [ "$rc" != 0 ] || [ "$problems" != 0 ]; then
    echo "verify-unit: ($label) FAILED: systemd-analyze verify exited $rc," \
      "$problems problem line(s)" >&2
    status=1
  else
    echo "verify-unit: ($label) OK: systemd-analyze verify printed nothing about the unit"
  fi
}

echo "verify-unit: $unit with $(systemd-analyze --version | head -n 1)"
check "as shipped" "$work/shipped/$name"
check "with #Key= examples" "$work/examples/$name"

if systemd-analyze --help 2>/dev/null | grep -q -- '--offline'; then
  rc=0
  score=$(systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" \
    "$work/shipped/$name" 2>&1 | grep 'Overall exposure level') || rc=$?
  echo "verify-unit: (sandbox) ${score:-no exposure level printed}"
  if [ "$rc" != 0 ]; then
    echo "verify-unit: (sandbox) FAILED: exposure over $MAX_EXPOSURE/100 (or no score);" \
      "see: systemd-analyze security --offline=true $unit" >&2
    status=1
  fi
else
  echo "verify-unit: (sandbox) skipped: this systemd-analyze has no security --offline"
fi
exit "$status"
