"""Fixtures for the conformance tests, and a summary section for results
(csi-sanity counts) that must show up in every run's output."""

from __future__ import annotations

import pytest

from support import report


def report_line(config: pytest.Config, line: str) -> None:
    report.report_line(config, "conformance results", line)
