"""Container image tests: selected with `pytest tests/image` (marker `image`)."""

from __future__ import annotations

import pytest

# Lines the image tests want shown at the end of the run, passing or not.
SUMMARY: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: builds and runs the container image (needs a Docker engine)"
    )


@pytest.fixture
def image_summary() -> list[str]:
    """Append lines here to have them printed in the run's closing summary."""
    return SUMMARY


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("container image")
        for line in SUMMARY:
            terminalreporter.write_line(line)
