"""One workload judged: which volumes count, what is exempt, what a patch achieves."""

from __future__ import annotations

from typing import Any

from csi_driver.check.analysis import analyse, exemption, strictest_level
from csi_driver.check.paths import agent_sockets
from csi_driver.check.podsecurity import namespace_policy
from csi_driver.check.workloads import Workload

SOCKETS = agent_sockets("/var/run/datadog/dsd.socket", "/var/run/datadog/apm.socket")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def workload(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], kind: str = "Deployment",
             image: str = "app", restricted: bool = True, pointer: str | None = "/spec/template") -> Workload:
    container: dict[str, Any] = {"name": "app", "image": image, "volumeMounts": mounts}
    spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    if restricted:
        spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return Workload("ns", kind, "w", {"metadata": {}, "spec": spec}, pointer)


def judge(w: Workload, labels: dict[str, str] | None = None):
    return analyse(w, namespace_policy(RESTRICTED if labels is None else labels), SOCKETS, "k8s.csi.datadoghq.com")


def test_a_restricted_template_but_its_hostpath_is_restricted_once_patched():
    judged = judge(workload([{"name": "dd", "hostPath": {"path": "/var/run/datadog"}}],
                            [{"name": "dd", "mountPath": "/var/run/datadog"}]))
    assert judged.verdict == "rejected" and judged.meets == "privileged"
    assert judged.patch is not None and judged.patch.meets == "restricted" and judged.patch.remaining == ()
    assert judged.runtime == ()


def test_a_subpath_decides_what_a_parent_volume_exposes():
    """/var/run with subPath datadog exposes neither docker.sock nor containerd.sock."""
    only_agent = judge(workload([{"name": "run", "hostPath": {"path": "/var/run"}}],
                                [{"name": "run", "mountPath": "/dd", "subPath": "datadog"}]))
    assert only_agent.runtime == () and [p.types for p in only_agent.agent] == [("DSDSocketDirectory",)]
    only_runtime = judge(workload([{"name": "run", "hostPath": {"path": "/var/run"}}],
                                  [{"name": "run", "mountPath": "/docker.sock", "subPath": "docker.sock"}]))
    assert only_runtime.agent == () and only_runtime.runtime[0].sockets == ("/var/run/docker.sock",)
    assert only_runtime.patch is None and only_runtime.patch_blocked == ()


def test_a_volume_reaching_nothing_of_interest_is_no_finding():
    assert judge(workload([{"name": "logs", "hostPath": {"path": "/var/log"}}],
                          [{"name": "logs", "mountPath": "/logs"}])) is None


def test_a_whole_parent_volume_is_both_findings_and_says_what_the_patch_removes():
    judged = judge(workload([{"name": "run", "hostPath": {"path": "/var/run"}}],
                            [{"name": "run", "mountPath": "/host/run"}]))
    assert judged.runtime and judged.agent
    assert any("also exposes container runtime sockets" in n for n in judged.agent[0].notes)


def test_without_namespace_labels_the_verdict_is_unknown():
    judged = analyse(workload([{"name": "dd", "hostPath": {"path": "/var/run/datadog"}}], []), None, SOCKETS, "d")
    assert judged.verdict == "unknown"


def test_warned_when_only_the_warn_level_objects():
    judged = judge(workload([{"name": "dd", "hostPath": {"path": "/var/run/datadog"}}], []),
                   {"pod-security.kubernetes.io/warn": "baseline"})
    assert judged.verdict == "warned"


def test_pods_of_an_unread_owner_get_no_patch_but_the_reason():
    judged = judge(workload([{"name": "dd", "hostPath": {"path": "/var/run/datadog"}}], [],
                            kind="ReplicationController", pointer=None))
    assert judged.patch is None
    assert "ReplicationController/w owns these pods" in judged.patch_blocked[0]


def test_the_agent_and_the_driver_keep_their_hostpath():
    for image in ("gcr.io/datadoghq/agent:7.60.0", "datadog/agent@sha256:0123", "public.ecr.aws/datadog/agent",
                  "registry.example.com:5000/datadog/agent:7"):
        assert "the Datadog Agent" in exemption(workload([], [], image=image), set())
    assert "CSI driver" in exemption(workload([], [], image="example.com/datadog-csi-driver:0.1.0"), set())
    driver = workload([], [], kind="DaemonSet")
    assert "DaemonSet" in exemption(driver, {("ns", "w")})
    assert exemption(workload([], [], image="example.com/agent-smith:1"), set()) == ""


def test_strictest_level():
    assert strictest_level(workload([], []).template)[0] == "restricted"
    assert strictest_level(workload([], [], restricted=False).template)[0] == "baseline"
    host = workload([{"name": "h", "hostPath": {"path": "/"}}], [], restricted=True)
    assert strictest_level(host.template)[0] == "privileged"
