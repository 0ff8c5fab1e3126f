#!/usr/bin/env bash
# Create .venv and install the driver (stubs generated from proto/) with its
# test dependencies. Safe to run again: it only refreshes what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup-dev: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [[ -f tests/chart/requirements.txt ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/chart/requirements.txt
fi
