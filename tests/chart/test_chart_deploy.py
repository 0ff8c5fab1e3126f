"""deploy/ holds exactly what scripts/render-deploy.sh renders from the chart."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate

from .chart_helpers import DEPLOY_DIR, NAMESPACE, RENDER_DEPLOY_SCRIPT, helm_binary, parse_manifests, render
from .test_chart_kubernetes_schemas import KUBERNETES_VERSIONS


def test_deploy_matches_the_chart(tmp_path: Path) -> None:
    env = {**os.environ, "HELM": helm_binary()}
    result = subprocess.run(
        ["bash", str(RENDER_DEPLOY_SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    expected = {p.name: p.read_text() for p in sorted(tmp_path.glob("*.yaml"))}
    actual = {p.name: p.read_text() for p in sorted(DEPLOY_DIR.glob("*.yaml"))}
    assert sorted(actual) == sorted(expected), "deploy/ has different files; run scripts/render-deploy.sh"
    stale = [name for name in expected if actual[name] != expected[name]]
    assert not stale, f"deploy/ is out of date with the chart ({', '.join(stale)}); run scripts/render-deploy.sh"


def deploy_objects() -> list[dict]:
    objects = []
    for path in sorted(DEPLOY_DIR.glob("*.yaml")):
        objects += parse_manifests(path.read_text())
    return objects


def test_deploy_applies_in_order_and_is_valid() -> None:
    objects = deploy_objects()
    # The ServiceAccount exists before the DaemonSet's pods are created.
    assert [o["kind"] for o in objects] == ["Namespace", "CSIDriver", "ServiceAccount", "ClusterRole",
                                            "ClusterRoleBinding", "DaemonSet"]
    namespace = objects[0]
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_deploy_objects_are_the_default_render() -> None:
    def by_kind(objects: list[dict]) -> list[dict]:
        return sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"]))

    assert by_kind(deploy_objects()[1:]) == by_kind(render())
