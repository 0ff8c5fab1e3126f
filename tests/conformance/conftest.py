"""Fixtures for the conformance tests, and a summary section for results
(csi-sanity counts) that must show up in every run's output."""

from __future__ import annotations

import pytest

_REPORT = pytest.StashKey[list]()


def report_line(config: pytest.Config, line: str) -> None:
    """Print ``line`` now (captured; shown by -rA / -s) and again in the
    terminal summary, so it appears whatever the output options."""
    print(line)
    config.stash.setdefault(_REPORT, []).append(line)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("conformance results")
        for line in lines:
            terminalreporter.write_line(line)
