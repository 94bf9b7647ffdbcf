#!/usr/bin/env bash
# Install ctnode into ./.venv with Python 3.11.
#   bash deploy/install.sh          the node and its command-line tools
#   bash deploy/install.sh test     plus what the test suite needs (pytest, ruff)
# Safe to run again: an existing .venv is reused and brought up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv/ensurepip separately from the interpreter.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}" 2> >(grep -v '^WARNING: Location' >&2)
