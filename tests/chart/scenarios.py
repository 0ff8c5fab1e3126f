"""Named value sets the chart is rendered with: (values, extra helm arguments)."""

from __future__ import annotations

from typing import Any

from .chart_helpers import AUTOPILOT_LEGACY, AUTOPILOT_WORKLOAD_ALLOWLISTS

PULL_SECRETS: dict[str, Any] = {
    "image": {"pullSecrets": [{"name": "image-registry"}]},
    "apm": {"pullSecrets": [{"name": "apm-registry-a"}, {"name": "apm-registry-b"}]},
}
ALLOW_LIST: dict[str, Any] = {
    "global": {"apmRegistryAllowList": ["gcr.io/datadoghq", "public.ecr.aws/datadog"]},
}

SCENARIOS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "defaults": ({}, ()),
    "shared-socket-dir": (
        {"sockets": {"apmHostSocketPath": "/run/dd/apm.sock", "dsdHostSocketPath": "/run/dd/dsd.sock"}},
        (),
    ),
    "separate-socket-dirs": (
        {
            "sockets": {
                "apmHostSocketPath": "/var/run/datadog-apm/apm.socket",
                "dsdHostSocketPath": "/var/run/datadog-dsd/dsd.socket",
            }
        },
        (),
    ),
    "resources": (
        {
            "driver": {
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"memory": "128Mi"},
                }
            }
        },
        (),
    ),
    "scheduling": (
        {
            "tolerations": [{"operator": "Exists"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "node-type", "operator": "NotIn", "values": ["virtual"]}]}
                    ]
                }
            },
            "priorityClassName": "system-node-critical",
        },
        (),
    ),
    "pod-metadata-and-security": (
        {
            "annotations": {"example.com/owner": "observability"},
            "labels": {"team": "observability", "app": "must-not-win"},
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "registrar": {"securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
        },
        (),
    ),
    "builtin-registrar": ({"registrar": {"mode": "builtin"}}, ()),
    "kubelet-root-dir": ({"kubeletRootDir": "/var/snap/microk8s/common/var/lib/kubelet"}, ()),
    "kubelet-root-dir-builtin": (
        {"kubeletRootDir": "/var/lib/k0s/kubelet", "registrar": {"mode": "builtin"}}, ()),
    "pull-secrets": (PULL_SECRETS, ()),
    "image-pull-secrets-only": ({"image": {"pullSecrets": [{"name": "image-registry"}]}}, ()),
    "allow-list": (ALLOW_LIST, ()),
    "apm-disabled": ({"apm": {"enabled": False, "pullSecrets": [{"name": "apm-registry-a"}]}}, ()),
    "name-overrides": ({"nameOverride": "dd-csi", "image": {"tag": "9.9.9"}}, ()),
    "fullname-override": ({"fullnameOverride": "datadog-csi"}, ()),
    "pod-events-disabled": ({"podEvents": {"enabled": False}}, ()),
    "pod-events-interval": ({"podEvents": {"checkInterval": "5m"}}, ()),
    "wait-for-agent-socket": ({"driver": {"waitForAgentSocket": "45s"}}, ()),
    "autopilot-workload-allowlists": ({**PULL_SECRETS, **ALLOW_LIST}, AUTOPILOT_WORKLOAD_ALLOWLISTS),
    "autopilot-legacy": ({**PULL_SECRETS, **ALLOW_LIST}, AUTOPILOT_LEGACY),
}
