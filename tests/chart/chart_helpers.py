"""Rendering the chart with Helm and picking apart what it renders."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "datadog-csi-driver"
DEPLOY_DIR = REPO_ROOT / "deploy"
RENDER_DEPLOY_SCRIPT = REPO_ROOT / "scripts" / "render-deploy.sh"

RELEASE = "datadog-csi-driver"
NAMESPACE = "datadog-csi-driver"
DRIVER_NAME = "k8s.csi.datadoghq.com"
DAEMONSET_NAME = "datadog-csi-driver-node-server"

# What a GKE Autopilot cluster advertises, per generation.
AUTOPILOT_WORKLOAD_ALLOWLISTS = (
    "--api-versions=auto.gke.io/v1/AllowlistSynchronizer",
    "--api-versions=auto.gke.io/v1/WorkloadAllowlist",
    "--kube-version=1.32.1-gke.1729000",
)
AUTOPILOT_LEGACY = (
    "--api-versions=allowlistedv2workloads.auto.gke.io/v1/AllowlistedV2Workload",
    "--kube-version=1.31.0-gke.0",
)


def helm_binary() -> str:
    """Helm from $HELM, else <repo>/.tools/bin/helm, else PATH; fails the test if none."""
    configured = os.environ.get("HELM")
    if configured:
        if shutil.which(configured) is None:
            pytest.fail(f"HELM={configured!r} is not an executable", pytrace=False)
        return configured
    local = REPO_ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(
        "helm not found: run scripts/install-helm.sh (installs .tools/bin/helm), "
        "set HELM=/path/to/helm, or put helm on PATH",
        pytrace=False,
    )


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=False, cwd=REPO_ROOT
    )


def _template(values_json: str, extra_args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(values_json)  # JSON is YAML
        values_file = handle.name
    try:
        return run_helm(
            "template", RELEASE, str(CHART_DIR),
            "--namespace", NAMESPACE,
            "--values", values_file,
            *extra_args,
        )
    finally:
        os.unlink(values_file)


@functools.cache
def _render_cached(values_json: str, extra_args: tuple[str, ...]) -> str:
    result = _template(values_json, extra_args)
    if result.returncode != 0:
        pytest.fail(f"helm template failed:\n{result.stderr}", pytrace=False)
    return result.stdout


def parse_manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(values: dict[str, Any] | None = None, extra_args: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The objects `helm template` renders for these values; fails the test on error."""
    text = _render_cached(json.dumps(values or {}, sort_keys=True), tuple(extra_args))
    return parse_manifests(text)


def render_error(values: dict[str, Any], extra_args: Iterable[str] = ()) -> str:
    """Helm's error output for values that must be refused; fails the test if they are not."""
    result = _template(json.dumps(values), tuple(extra_args))
    if result.returncode == 0:
        pytest.fail(f"helm accepted values it should refuse: {values}", pytrace=False)
    return result.stderr


def objects_of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = objects_of_kind(objects, kind)
    assert len(matches) == 1, f"expected exactly one {kind}, got {len(matches)}"
    return matches[0]


def daemonset(values: dict[str, Any] | None = None, extra_args: Iterable[str] = ()) -> dict[str, Any]:
    return only(render(values, extra_args), "DaemonSet")


def container(ds: dict[str, Any], name: str) -> dict[str, Any]:
    containers = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
    assert name in containers, f"no container {name!r} in {sorted(containers)}"
    return containers[name]


def driver(ds: dict[str, Any]) -> dict[str, Any]:
    return container(ds, "csi-node-driver")


def registrar(ds: dict[str, Any]) -> dict[str, Any]:
    return container(ds, "csi-node-driver-registrar")


def env_by_name(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def mounts_by_name(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def volumes_by_name(ds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in ds["spec"]["template"]["spec"].get("volumes", [])}


def args_by_flag(c: dict[str, Any]) -> dict[str, str]:
    """`--flag=value` arguments as {"--flag": "value"}; each flag must appear once."""
    parsed: dict[str, str] = {}
    for arg in c.get("args", []):
        flag, sep, value = arg.partition("=")
        assert sep, f"argument {arg!r} is not of the form --flag=value"
        assert flag not in parsed, f"flag {flag} given twice"
        parsed[flag] = value
    return parsed
