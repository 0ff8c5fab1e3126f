"""The CSI conformance suite (csi-sanity) against the real driver process.

The driver runs with real mounts: a demo agent's sockets, a kubelet root in a
temporary directory, and csi-sanity's mount directory laid out where the
kubelet would put a volume (``<root>/pods/<uid>/volumes/kubernetes.io~csi/
<name>``; csi-sanity creates that directory itself, so only its parent is
prepared). A stand-in controller (``controller.py``) creates volumes whose
context carries the volume type, so the two specs that publish for real run
too. Specs that cannot apply are skipped by name from ``csi-sanity-skips.txt``.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.conftest import report_line
from conformance.controller import FakeController
from support.kubelet import DRIVER
from support.snapshot import mounts_under, tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CSI_SANITY = REPO / ".tools" / "bin" / "csi-sanity"
SKIPS_FILE = HERE / "csi-sanity-skips.txt"
# Specs that prove real publishing; they need the stand-in controller.
MUST_PASS = (
    "Node Service NodeUnpublishVolume should remove target path",
    "Node Service NodeGetVolumeStats should fail when volume does not exist on the specified path",
)


@dataclass(frozen=True)
class Skip:
    pattern: str
    reason: str


def load_skips(path: Path = SKIPS_FILE) -> list[Skip]:
    skips = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = line.partition(" # ")
        if not sep or not reason.strip():
            raise ValueError(f"{path.name}:{number}: every skip needs ' # <reason>': {raw!r}")
        re.compile(pattern)
        skips.append(Skip(pattern.strip(), reason.strip()))
    return skips


@dataclass(frozen=True)
class Spec:
    name: str  # full text, as -ginkgo.skip sees it
    state: str  # passed, failed, skipped, pending
    detail: str


def read_junit(path: Path) -> list[Spec]:
    specs = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("[It] "):
            continue  # suite-level nodes ([BeforeSuite] ...), not specs
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        detail = "" if failure is None else (failure.get("message", "") + "\n" + (failure.text or ""))
        specs.append(Spec(name[len("[It] "):], case.get("status", ""), detail))
    return specs


@pytest.fixture(scope="module")
def controller_stubs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("controller-stubs")


@pytest.mark.parametrize("volume_type", ["DSDSocket", "APMSocketDirectory"])
def test_csi_sanity(request, driver, kubelet_root, tmp_path, controller_stubs, volume_type):
    if not CSI_SANITY.is_file():
        pytest.fail(f"{CSI_SANITY} is missing; scripts/test.sh installs it "
                    "(scripts/install-csi-sanity.sh)")
    skips = load_skips()
    pod_uid = str(uuid.uuid4())
    volumes_dir = Path(kubelet_root, "pods", pod_uid, "volumes", "kubernetes.io~csi")
    volumes_dir.mkdir(parents=True, mode=0o750)
    mount_dir = volumes_dir / "sanity"  # csi-sanity creates it (non-recursively) per spec
    pods_before = tree(os.path.join(kubelet_root, "pods"))

    params = tmp_path / "volume-parameters.yaml"
    params.write_text(f"type: {volume_type}\n")
    junit = tmp_path / "csi-sanity.xml"
    controller = FakeController(str(tmp_path / "controller.sock"), controller_stubs, DRIVER).start()
    try:
        result = subprocess.run([
            str(CSI_SANITY),
            f"--csi.endpoint=unix://{driver.socket_path}",
            f"--csi.controllerendpoint=unix://{controller.socket_path}",
            f"--csi.mountdir={mount_dir}",
            "--csi.stagingdir=",  # no staging: the driver has no STAGE_UNSTAGE_VOLUME
            f"--csi.testvolumeparameters={params}",
            "--ginkgo.skip=" + "|".join(f"(?:{skip.pattern})" for skip in skips),
            f"--ginkgo.junit-report={junit}",
            "--ginkgo.no-color",
        ], capture_output=True, text=True, timeout=600)
    finally:
        controller.stop()

    output = result.stdout + result.stderr
    assert junit.is_file(), f"csi-sanity wrote no report (exit {result.returncode}):\n{output}"
    specs = read_junit(junit)
    counts = Counter(spec.state for spec in specs)
    line = (f"csi-sanity [{volume_type}]: passed={counts['passed']} failed={counts['failed']} "
            f"skipped={counts['skipped']} pending={counts['pending']} (of {len(specs)} specs)")
    report_line(request.config, line)

    failed = [spec for spec in specs if spec.state not in ("passed", "skipped", "pending")]
    assert result.returncode == 0 and not failed, (
        "csi-sanity failed:\n" + "\n".join(f"- {s.name}: {s.detail}" for s in failed)
        + f"\n--- output ---\n{output[-20000:]}")
    by_name = {spec.name: spec.state for spec in specs}
    for name in MUST_PASS:
        assert by_name.get(name) == "passed", f"{name!r} did not run: {by_name.get(name)}"
    assert controller.created and sorted(controller.created) == sorted(controller.deleted)
    for skip in skips:
        matched = [s for s in specs if re.search(skip.pattern, s.name)]
        assert matched, f"skip {skip.pattern!r} matches no spec any more; remove it"
        assert all(s.state in ("skipped", "pending") for s in matched), skip.pattern

    # Every spec cleaned up after itself: no mounts, and the pods directory is
    # as it was before the run (csi-sanity removed its mount directory).
    assert mounts_under(kubelet_root) == []
    assert tree(os.path.join(kubelet_root, "pods")) == pods_before
    assert not mount_dir.exists()
