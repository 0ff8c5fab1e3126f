"""The container image: it builds, reports its version, and serves CSI on a
read-only root filesystem through a socket in a mounted host directory.

Needs a Docker engine; scripts/build-image.sh starts one when it can. Where none
can be started these tests fail (they never skip).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import grpc
import pytest

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
DRIVER_NAME = "k8s.csi.datadoghq.com"
BUILD_TIMEOUT = 1500  # first build also makes the Debian base image

_build: dict[str, object] = {}


def _project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def _image(summary: list[str]) -> str:
    """Build the image once per session (engine start + base fallback + build)."""
    if "error" in _build:
        pytest.fail(str(_build["error"]))
    if "tag" in _build:
        return str(_build["tag"])

    engine = subprocess.run(
        ["bash", str(SCRIPTS / "docker-engine.sh")], capture_output=True, text=True, timeout=600
    )
    if engine.returncode != 0:
        _build["error"] = (
            "No Docker engine is running and none could be started, so the container "
            "image cannot be built or tested here.\n"
            f"scripts/docker-engine.sh exited {engine.returncode}:\n{_tail(engine.stderr)}"
        )
        pytest.fail(str(_build["error"]))

    tag = f"datadog-csi-driver:image-test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    build = subprocess.run(
        ["bash", str(SCRIPTS / "build-image.sh"), tag],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )
    elapsed = time.monotonic() - start
    if build.returncode != 0:
        _build["error"] = (
            f"scripts/build-image.sh exited {build.returncode} after {elapsed:.0f}s:\n"
            f"{_tail(build.stderr, 80)}"
        )
        pytest.fail(str(_build["error"]))
    size_lines = [line for line in build.stderr.splitlines() if f"image {tag}: size" in line]
    summary.append(
        (size_lines[-1].removeprefix("build-image: ") if size_lines else f"image {tag}")
        + f" (build-image.sh took {elapsed:.0f}s)"
    )
    _build["tag"] = tag
    return tag


@pytest.fixture(scope="module", autouse=True)
def _remove_test_image():
    yield
    if "tag" in _build:
        subprocess.run(["docker", "rmi", "-f", str(_build["tag"])], capture_output=True, timeout=120)


def test_image_reports_package_version(image_summary):
    image = _image(image_summary)
    proc = _docker("run", "--rm", "--read-only", "--network", "none", image, "--version")
    assert proc.stdout.strip() == f"datadog-csi-driver {_project_version()}"


def test_image_has_oci_labels_and_no_compiler(image_summary):
    image = _image(image_summary)
    labels = json.loads(_docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout)
    assert labels["org.opencontainers.image.title"] == "datadog-csi-driver"
    assert labels["org.opencontainers.image.version"] == _project_version()
    probe = _docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
        "for c in cc gcc g++ clang make; do command -v $c; done; true",
    )
    assert probe.stdout.strip() == "", f"build tools in the runtime image: {probe.stdout}"


def test_image_serves_get_plugin_info_on_read_only_root(image_summary):
    from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc

    image = _image(image_summary)
    # Short host paths: a Unix socket path must fit in 108 bytes.
    csi_dir = Path(tempfile.mkdtemp(prefix="csi-img-"))
    kubelet_dir = Path(tempfile.mkdtemp(prefix="csi-kubelet-"))
    (kubelet_dir / "pods").mkdir()
    name = f"csi-image-test-{uuid.uuid4().hex[:8]}"
    socket = csi_dir / "csi.sock"
    try:
        _docker(
            "run", "-d", "--name", name, "--read-only", "--network", "none",
            "-v", f"{csi_dir}:/csi", "-v", f"{kubelet_dir}:/kubelet",
            image,
            "--csi-endpoint", "unix:///csi/csi.sock",
            "--metrics-port", "0",
            "--kubelet-root-dir", "/kubelet",
        )
        deadline = time.monotonic() + 30
        while not socket.exists():
            state = _docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            logs = _docker("logs", name, check=False)
            assert state == "true", f"container exited before serving:\n{logs.stdout}{logs.stderr}"
            assert time.monotonic() < deadline, f"no socket after 30s:\n{logs.stdout}{logs.stderr}"
            time.sleep(0.2)

        with grpc.insecure_channel(f"unix://{socket}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            info = csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(
                csi_pb2.GetPluginInfoRequest(), timeout=10
            )
        assert info.name == DRIVER_NAME
        assert info.vendor_version == _project_version()

        inspect = json.loads(_docker("inspect", name).stdout)[0]
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        assert inspect["State"]["Running"] is True

        # SIGTERM (docker stop) ends the driver cleanly, well before the kill timeout.
        start = time.monotonic()
        _docker("stop", "-t", "20", name, timeout=60)
        stop_seconds = time.monotonic() - start
        exit_code = _docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        logs = _docker("logs", name, check=False)
        assert exit_code == "0", f"exit code {exit_code} after stop:\n{logs.stdout}{logs.stderr}"
        assert stop_seconds < 15, f"stop took {stop_seconds:.1f}s"
        assert not socket.exists(), "the driver left its socket behind"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        shutil.rmtree(csi_dir, ignore_errors=True)
        shutil.rmtree(kubelet_dir, ignore_errors=True)
