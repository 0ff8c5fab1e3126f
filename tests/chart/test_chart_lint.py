"""`helm lint --strict` passes with the defaults and with every scenario's values."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from .chart_helpers import CHART_DIR, run_helm
from .scenarios import SCENARIOS


def lint(values: dict) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(values, handle)
        values_file = handle.name
    try:
        result = run_helm("lint", "--strict", str(CHART_DIR), "--values", values_file)
    finally:
        os.unlink(values_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_helm_lint_defaults() -> None:
    result = run_helm("lint", "--strict", str(CHART_DIR))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_scenario_values(scenario: str) -> None:
    values, _ = SCENARIOS[scenario]
    lint(values)
