"""One real driver per fuzz module, on a kubelet tree full of traps.

Sizes: FUZZ_EXAMPLES sets the examples per fuzz test (default in
``harness.DEFAULT_EXAMPLES``), FUZZ_RACE_ATTEMPTS the publishes per race
variant. Every test reports how many inputs it tried and the status codes it
got; the lines are repeated in the terminal summary and appended to the file
FUZZ_REPORT names (default: fuzz-figures.txt in pytest's temporary directory).
"""

from __future__ import annotations

import pytest

from fuzz import harness
from support.driver import DriverProcess


def start(root: str) -> harness.Fuzz:
    layout = harness.Layout(root).build()
    driver = DriverProcess(workdir=root, kubelet_root=layout.kubelet_root,
                           dsd_path=layout.dsd_path, apm_path=layout.apm_path).start()
    fuzz = harness.Fuzz(layout, driver)
    fuzz.settle()
    return fuzz


@pytest.fixture(scope="session", autouse=True)
def figures_file(tmp_path_factory):
    if harness.REPORT_FILE is None:
        harness.REPORT_FILE = str(tmp_path_factory.getbasetemp() / "fuzz-figures.txt")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    env = start(str(tmp_path_factory.mktemp("fuzz")))
    yield env
    env.driver.stop()
    env.layout.close()


@pytest.fixture
def counted(fuzz, request):
    """The module's harness with its counters reset, reported when the test ends."""
    fuzz.codes.clear()
    fuzz.inputs = fuzz.examples = fuzz.cleanups = 0
    yield fuzz
    harness.report(fuzz.summary(request.node.name))


def pytest_terminal_summary(terminalreporter):
    if harness.FIGURES:
        terminalreporter.section("fuzz figures")
        for line in harness.FIGURES:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(also in {harness.REPORT_FILE})")
