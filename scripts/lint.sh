#!/usr/bin/env bash
# Lint and type-check: ruff (style, imports, complexity) over the whole tree,
# mypy --strict over csi_driver/ against typed stubs of the generated code.
#
#   scripts/lint.sh        (scripts/test.sh runs it on a full run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x .venv/bin/python ]] || scripts/setup-dev.sh

# Typed .pyi stubs (mypy-protobuf) beside the generated modules, which they describe.
.venv/bin/python build_support/protogen.py --stubs 2>&1 >/dev/null | { grep -v "^Writing mypy to" || true; } >&2
.venv/bin/ruff check csi_driver tests bench build_support setup.py
.venv/bin/mypy
