#!/usr/bin/env bash
# Create .venv and install the driver (stubs generated from proto/) with its
# test dependencies. A second run reinstalls only when something the install
# depends on changed (pyproject.toml, setup.py, build_support/, proto/): a
# stamp in .venv records what was installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup-dev: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

stamp=.venv/.installed
inputs="$( (cat pyproject.toml setup.py tests/chart/requirements.txt 2>/dev/null;
            find build_support proto -type f -name '*.p[yr]*' -print0 | sort -z | xargs -0 cat) |
           sha256sum | cut -d' ' -f1)"
generated_present() {
    local proto
    for proto in proto/*.proto; do
        compgen -G "csi_driver/*/v1/$(basename "$proto" .proto)_pb2.py" >/dev/null || return 1
    done
}
if [[ -x .venv/bin/python && "$(cat "$stamp" 2>/dev/null)" == "$inputs" ]] && generated_present; then
    echo "setup-dev: .venv is up to date (skipped)"
    exit 0
fi

started=$SECONDS
echo "setup-dev: installing the driver and its test dependencies into .venv (first run: about 1 minute)"
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [[ -f tests/chart/requirements.txt ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/chart/requirements.txt
fi
echo "$inputs" >"$stamp"
echo "setup-dev: done in $((SECONDS - started)) s"
