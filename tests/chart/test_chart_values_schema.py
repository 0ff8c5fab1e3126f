"""values.schema.json turns typos and wrong types into install-time errors."""

from __future__ import annotations

import pytest

from .chart_helpers import render, render_error

REFUSED = {
    "unknown top-level key": ({"nodeSelectors": {"a": "b"}}, "additional properties 'nodeSelectors'"),
    "unknown image key": ({"image": {"tagg": "1.0"}}, "additional properties 'tagg'"),
    "unknown registrar image key": ({"registrar": {"image": {"name": "x"}}}, "additional properties 'name'"),
    "unknown sockets key": ({"sockets": {"apmSocketPath": "/a/b"}}, "additional properties 'apmSocketPath'"),
    "unknown apm key": ({"apm": {"enable": True}}, "additional properties 'enable'"),
    "unknown driver key": ({"driver": {"resource": {}}}, "additional properties 'resource'"),
    "unknown resources key": ({"driver": {"resources": {"limit": {}}}}, "additional properties 'limit'"),
    "boolean as string": ({"apm": {"enabled": "true"}}, "/apm/enabled"),
    "tolerations as object": ({"tolerations": {"key": "a"}}, "/tolerations"),
    "pull secret as string": ({"image": {"pullSecrets": ["regcred"]}}, "/image/pullSecrets/0"),
    "apm pull secret without name": ({"apm": {"pullSecrets": [{}]}}, "/apm/pullSecrets/0"),
    "label value not a string": ({"labels": {"tier": 1}}, "/labels/tier"),
    "allow list as string": ({"global": {"apmRegistryAllowList": "gcr.io"}}, "/global/apmRegistryAllowList"),
    "allow list entry with comma": (
        {"global": {"apmRegistryAllowList": ["a.io,b.io"]}},
        "/global/apmRegistryAllowList/0",
    ),
    "pull policy typo": ({"image": {"pullPolicy": "IfNotPresents"}}, "/image/pullPolicy"),
    "update strategy typo": ({"updateStrategy": {"type": "Rolling"}}, "/updateStrategy/type"),
    "max unavailable not a percentage": (
        {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "ten"}}},
        "/updateStrategy/rollingUpdate/maxUnavailable",
    ),
    "unprivileged driver": (
        {"driver": {"securityContext": {"privileged": False}}}, "/driver/securityContext/privileged"),
    "relative socket path": ({"sockets": {"apmHostSocketPath": "run/apm.socket"}}, "/sockets/apmHostSocketPath"),
    "socket directly under /": ({"sockets": {"dsdHostSocketPath": "/dsd.socket"}}, "/sockets/dsdHostSocketPath"),
    "socket path with ..": ({"sockets": {"dsdHostSocketPath": "/var/../dsd/s"}}, "/sockets/dsdHostSocketPath"),
    "name override not a DNS label": ({"nameOverride": "Datadog_CSI"}, "/nameOverride"),
    "relative kubelet root": ({"kubeletRootDir": "var/lib/kubelet"}, "/kubeletRootDir"),
    "kubelet root with ..": ({"kubeletRootDir": "/var/lib/../kubelet"}, "/kubeletRootDir"),
    "kubelet root with a trailing /": ({"kubeletRootDir": "/var/lib/kubelet/"}, "/kubeletRootDir"),
    "kubelet root /": ({"kubeletRootDir": "/"}, "/kubeletRootDir"),
    "unknown podEvents key": ({"podEvents": {"enable": False}}, "additional properties 'enable'"),
    "check interval without a unit": ({"podEvents": {"checkInterval": "60"}}, "/podEvents/checkInterval"),
    "wait as a number": ({"driver": {"waitForAgentSocket": 30}}, "/driver/waitForAgentSocket"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_schema_refuses(case: str) -> None:
    values, expected = REFUSED[case]
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error, error
    assert expected in error, error


def test_parent_chart_globals_are_accepted() -> None:
    """As a subchart of `datadog`, global carries keys this chart does not read."""
    render({"global": {"site": "datadoghq.eu", "apmRegistryAllowList": []}})


def test_valid_alternatives_are_accepted() -> None:
    render(
        {
            "updateStrategy": {"type": "OnDelete"},
            "driver": {"securityContext": {"privileged": True, "readOnlyRootFilesystem": False,
                                           "capabilities": {"drop": ["NET_RAW"]}}},
            "sockets": {"apmHostSocketPath": "/run/datadog/apm.sock"},
        }
    )
