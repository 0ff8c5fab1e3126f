"""Figures a suite must show in every run's output (csi-sanity counts, the
end-to-end timings): printed at once, and again in a summary section."""

from __future__ import annotations

import pytest

_SECTIONS = pytest.StashKey[dict[str, list[str]]]()


def report_line(config: pytest.Config, section: str, line: str) -> None:
    """Print ``line`` now (captured; shown by -rA / -s) and again under
    ``section`` in the terminal summary, whatever the output options."""
    print(line)
    config.stash.setdefault(_SECTIONS, {}).setdefault(section, []).append(line)


def write_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for section, lines in config.stash.get(_SECTIONS, {}).items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
