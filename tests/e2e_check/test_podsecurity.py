"""The check's Pod Security evaluation agrees with the API server's admission.

Each template below breaks one control (or none); a server-side dry run of a
pod of it in namespaces enforcing ``baseline``, ``restricted``, and
``restricted`` pinned to an older version says what admission decides, and
``podsecurity.violations`` must decide the same.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from csi_driver.check import podsecurity
from e2e_check.scenario import ENFORCE, CheckCluster, create_namespace

OLD = "v1.26"  # before the sysctls of 1.27 and 1.29, container_engine_t (1.31), probe hosts (1.34)
LEVELS = {"chk-pss-baseline": ("baseline", "latest"), "chk-pss-restricted": ("restricted", "latest"),
          f"chk-pss-restricted-{OLD.replace('.', '')}": ("restricted", OLD)}


def _base() -> dict[str, Any]:
    """A pod every level admits."""
    return {
        "metadata": {"labels": {"app": "pss"}},
        "spec": {
            "nodeSelector": {"e2e-check/never": "true"},
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "localhost/e2e/app:1",
                            "securityContext": {"allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}}}],
        },
    }


def _container(t: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = t["spec"]["containers"][0]
    return container


def _pod_security(t: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = t["spec"]["securityContext"]
    return context


def _security(t: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = _container(t)["securityContext"]
    return context


def _plain(t: dict[str, Any]) -> None:
    del t["spec"]["securityContext"]
    del _container(t)["securityContext"]


def _privileged(t: dict[str, Any]) -> None:
    _security(t).update(privileged=True, allowPrivilegeEscalation=True)


def _init_privileged(t: dict[str, Any]) -> None:
    init = copy.deepcopy(_container(t))
    init.update(name="init")
    init["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)
    t["spec"]["initContainers"] = [init]


CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "restricted": lambda t: None,
    "defaults": _plain,
    "hostNetwork": lambda t: t["spec"].update(hostNetwork=True),
    "hostPID": lambda t: t["spec"].update(hostPID=True),
    "hostIPC": lambda t: t["spec"].update(hostIPC=True),
    "privileged": _privileged,
    "privileged init container": _init_privileged,
    "add SYS_ADMIN": lambda t: _security(t)["capabilities"].update(add=["SYS_ADMIN"]),
    "add CHOWN": lambda t: _security(t)["capabilities"].update(add=["CHOWN"]),
    "add NET_BIND_SERVICE": lambda t: _security(t)["capabilities"].update(add=["NET_BIND_SERVICE"]),
    "capabilities kept": lambda t: _security(t).pop("capabilities"),
    "hostPath": lambda t: t["spec"].update(volumes=[{"name": "h", "hostPath": {"path": "/var/run/datadog"}}]),
    "nfs volume": lambda t: t["spec"].update(volumes=[{"name": "n", "nfs": {"server": "192.0.2.1", "path": "/x"}}]),
    "csi volume": lambda t: t["spec"].update(volumes=[{"name": "c", "csi": {
        "driver": "k8s.csi.datadoghq.com", "volumeAttributes": {"type": "DSDSocketDirectory"}}}]),
    "hostPort": lambda t: _container(t).update(ports=[{"containerPort": 8080, "hostPort": 8080}]),
    "AppArmor Unconfined": lambda t: _security(t).update(appArmorProfile={"type": "Unconfined"}),
    "AppArmor RuntimeDefault": lambda t: _security(t).update(appArmorProfile={"type": "RuntimeDefault"}),
    "SELinux spc_t": lambda t: _security(t).update(seLinuxOptions={"type": "spc_t"}),
    "SELinux container_engine_t": lambda t: _security(t).update(seLinuxOptions={"type": "container_engine_t"}),
    "SELinux user": lambda t: _pod_security(t).update(seLinuxOptions={"user": "system_u"}),
    "seccomp Unconfined": lambda t: _pod_security(t).update(seccompProfile={"type": "Unconfined"}),
    "seccomp unset": lambda t: _pod_security(t).pop("seccompProfile"),
    "seccomp on the container only": lambda t: _security(t).update(
        seccompProfile=_pod_security(t).pop("seccompProfile")),
    "unsafe sysctl": lambda t: _pod_security(t).update(sysctls=[{"name": "kernel.msgmax", "value": "65536"}]),
    "sysctl of 1.27": lambda t: _pod_security(t).update(sysctls=[{"name": "net.ipv4.ip_local_reserved_ports",
                                                                  "value": "30000"}]),
    "sysctl of 1.29": lambda t: _pod_security(t).update(sysctls=[{"name": "net.ipv4.tcp_keepalive_time",
                                                                  "value": "600"}]),
    "probe host": lambda t: _container(t).update(readinessProbe={"httpGet": {"host": "192.0.2.1", "port": 80}}),
    "runAsNonRoot unset": lambda t: _pod_security(t).pop("runAsNonRoot"),
    "runAsNonRoot false": lambda t: _security(t).update(runAsNonRoot=False),
    "runAsUser 0": lambda t: _security(t).update(runAsUser=0),
    "allowPrivilegeEscalation unset": lambda t: _security(t).pop("allowPrivilegeEscalation"),
}


@pytest.fixture(scope="module")
def pss_namespaces(scenario: CheckCluster) -> dict[str, tuple[str, str]]:
    for name, (level, version) in LEVELS.items():
        create_namespace(scenario, name, {ENFORCE: level, f"{ENFORCE}-version": version})
    return LEVELS


def _admitted(cluster: CheckCluster, namespace: str, template: dict[str, Any]) -> tuple[bool, str]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "pss-", **template["metadata"]},
           "spec": template["spec"]}
    try:
        cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as err:
        message = json.loads(err.body).get("message", "")
        if err.status == 403 and "violates PodSecurity" in message:
            return False, message
        raise AssertionError(f"the API server refused the pod for another reason: {err.status} {message}") from None
    return True, ""


@pytest.mark.parametrize("case", list(CASES))
def test_the_evaluation_agrees_with_admission(scenario, pss_namespaces, case):
    template = _base()
    CASES[case](template)
    for namespace, (level, version) in pss_namespaces.items():
        admitted, message = _admitted(scenario, namespace, template)
        found = podsecurity.violations(template, level, version)
        assert admitted == (not found), (
            f"{case} at {level}:{version}: admission {'admits' if admitted else 'refuses'} ({message}); "
            f"the check found {found}")
