"""Pod Security levels from namespace labels, and a template's violations.

The evaluation is also compared with the API server's own admission on a
real cluster (tests/e2e_check/test_podsecurity.py); these cover the rules one
by one, without a cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from csi_driver.check.podsecurity import LevelVersion, namespace_policy, violations

P = "pod-security.kubernetes.io/"


def restricted_pod() -> dict[str, Any]:
    return {"metadata": {}, "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}}]}}


def checks(template: dict[str, Any], level: str, version: str = "latest") -> list[str]:
    return [v.check for v in violations(template, level, version)]


def test_levels_come_from_the_labels():
    policy = namespace_policy({P + "enforce": "baseline", P + "enforce-version": "v1.30", P + "warn": "restricted"})
    assert policy.enforce == LevelVersion("baseline", "v1.30", "label")
    assert policy.warn == LevelVersion("restricted", "latest", "label")


def test_without_labels_the_cluster_default_applies():
    policy = namespace_policy({})
    assert policy.enforce == LevelVersion("privileged", "latest", "default")
    assert policy.warn.source == "default"


def test_invalid_labels_are_read_as_admission_reads_them():
    """enforce fails closed (restricted), warn fails open (privileged), a bad version is latest."""
    policy = namespace_policy({P + "enforce": "strict", P + "warn": "loud", P + "enforce-version": "1.30"})
    assert policy.enforce == LevelVersion("restricted", "latest", "invalid label")
    assert policy.warn == LevelVersion("privileged", "latest", "invalid label")


def test_a_restricted_pod_has_no_violation_at_any_level():
    for level in ("privileged", "baseline", "restricted"):
        assert violations(restricted_pod(), level) == []


def test_the_privileged_level_forbids_nothing():
    pod = restricted_pod()
    pod["spec"].update(hostNetwork=True, volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    assert violations(pod, "privileged") == []


def test_hostpath_alone_violates_baseline_and_restricted_once_each():
    pod = restricted_pod()
    pod["spec"]["volumes"] = [{"name": "dd", "hostPath": {"path": "/var/run/datadog"}},
                              {"name": "cfg", "configMap": {"name": "x"}}]
    baseline = violations(pod, "baseline")
    assert [(v.check, v.detail) for v in baseline] == [("hostPathVolumes", 'hostPath volumes "dd"')]
    # At restricted the volume-type check replaces the hostPath one: one message, not two.
    assert checks(pod, "restricted") == ["restrictedVolumes"]


def _with(mutate) -> dict[str, Any]:
    pod = restricted_pod()
    mutate(pod["spec"], pod["spec"]["containers"][0]["securityContext"], pod)
    return pod


@pytest.mark.parametrize(("mutate", "check"), [
    (lambda s, c, p: s.update(hostPID=True), "hostNamespaces"),
    (lambda s, c, p: c.update(privileged=True), "privileged"),
    (lambda s, c, p: c["capabilities"].update(add=["SYS_ADMIN"]), "capabilities"),
    (lambda s, c, p: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPorts"),
    (lambda s, c, p: c.update(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions"),
    (lambda s, c, p: s["securityContext"].update(seLinuxOptions={"role": "sysadm_r"}), "seLinuxOptions"),
    (lambda s, c, p: c.update(procMount="Unmasked"), "procMount"),
    (lambda s, c, p: c.update(appArmorProfile={"type": "Unconfined"}), "appArmor"),
    (lambda s, c, p: p["metadata"].update(annotations={
        "container.apparmor.security.beta.kubernetes.io/app": "unconfined"}), "appArmor"),
    (lambda s, c, p: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctls"),
    (lambda s, c, p: c.update(windowsOptions={"hostProcess": True}), "hostProcess"),
    (lambda s, c, p: s["containers"][0].update(livenessProbe={"tcpSocket": {"host": "10.0.0.1", "port": 1}}),
     "hostProbesAndHostLifecycle"),
])
def test_each_baseline_control(mutate, check):
    pod = _with(mutate)
    assert check in checks(pod, "baseline")
    assert check in checks(pod, "restricted")


@pytest.mark.parametrize(("mutate", "check"), [
    (lambda s, c, p: c.pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    (lambda s, c, p: s["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    (lambda s, c, p: c.update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda s, c, p: c.update(runAsUser=0), "runAsUser"),
    (lambda s, c, p: s["securityContext"].pop("seccompProfile"), "seccompProfile"),
    (lambda s, c, p: c.pop("capabilities"), "capabilities"),
    (lambda s, c, p: c["capabilities"].update(add=["CHOWN"]), "capabilities"),
    (lambda s, c, p: s.update(volumes=[{"name": "n", "nfs": {"server": "a", "path": "/"}}]), "restrictedVolumes"),
])
def test_each_restricted_control_and_baseline_does_not_mind(mutate, check):
    pod = _with(mutate)
    assert checks(pod, "baseline") == []
    assert check in checks(pod, "restricted")


def test_allowed_values_are_allowed():
    pod = _with(lambda s, c, p: (c["capabilities"].update(add=["NET_BIND_SERVICE"]),
                                 c.update(seLinuxOptions={"type": "container_t"},
                                          appArmorProfile={"type": "RuntimeDefault"}),
                                 s.update(volumes=[{"name": "c", "csi": {"driver": "k8s.csi.datadoghq.com"}},
                                                   {"name": "e", "emptyDir": {}}]),
                                 s["securityContext"].update(sysctls=[{"name": "net.ipv4.ping_group_range",
                                                                       "value": "0 1"}])))
    assert violations(pod, "restricted") == []


def test_seccomp_on_every_container_replaces_the_pod_level():
    pod = restricted_pod()
    del pod["spec"]["securityContext"]["seccompProfile"]
    pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Localhost",
                                                                         "localhostProfile": "p.json"}
    assert violations(pod, "restricted") == []
    pod["spec"]["initContainers"] = [copy.deepcopy(pod["spec"]["containers"][0]) | {"name": "init"}]
    del pod["spec"]["initContainers"][0]["securityContext"]["seccompProfile"]
    assert [v.detail for v in violations(pod, "restricted")] == [
        'seccompProfile not RuntimeDefault or Localhost for containers "init"']


def test_init_and_ephemeral_containers_count():
    pod = restricted_pod()
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "securityContext": {"privileged": True}}]
    assert "privileged" in checks(pod, "baseline")


@pytest.mark.parametrize(("version", "found"), [
    ("v1.22", []),  # runAsUser came with 1.23
    ("v1.23", ["runAsUser"]),
    ("latest", ["runAsUser"]),
])
def test_checks_apply_from_the_version_that_introduced_them(version, found):
    pod = _with(lambda s, c, p: c.update(runAsUser=0))
    assert checks(pod, "restricted", version) == found


@pytest.mark.parametrize(("sysctl", "since"), [("net.ipv4.ip_local_reserved_ports", 27),
                                               ("net.ipv4.tcp_keepalive_time", 29)])
def test_sysctls_allowed_from_their_version(sysctl, since):
    pod = _with(lambda s, c, p: s["securityContext"].update(sysctls=[{"name": sysctl, "value": "1"}]))
    assert checks(pod, "baseline", f"v1.{since - 1}") == ["sysctls"]
    assert checks(pod, "baseline", f"v1.{since}") == []


def test_windows_pods_are_exempt_from_the_linux_only_restricted_controls():
    pod = restricted_pod()
    pod["spec"]["os"] = {"name": "windows"}
    del pod["spec"]["securityContext"]["seccompProfile"]
    pod["spec"]["containers"][0]["securityContext"] = {}
    assert checks(pod, "restricted") == []
    del pod["spec"]["securityContext"]["runAsNonRoot"]  # not Linux-only
    assert checks(pod, "restricted") == ["runAsNonRoot"]
