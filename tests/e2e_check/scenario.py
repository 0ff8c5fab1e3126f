"""The workloads `datadog-csi-driver check` is run against: every kind, with and
without the hostPath patterns, in namespaces of each Pod Security level.

No pod of the scenario ever runs on the node: every template selects a node
label nobody has, so controllers create pods (when admission lets them) that
stay Pending, and no hostPath of the scenario is ever mounted on this machine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from e2e.kube import APP_IMAGE, Cluster, wait_for

NOWHERE = {"e2e-check/never": "true"}
ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"

# namespace -> its Pod Security labels
NAMESPACES = {
    "chk-privileged": {ENFORCE: "privileged"},
    "chk-baseline": {ENFORCE: "baseline", WARN: "restricted"},
    "chk-restricted": {ENFORCE: "restricted", WARN: "restricted"},
    "chk-warn": {WARN: "restricted", f"{WARN}-version": "v1.30"},
    "chk-hidden": {ENFORCE: "privileged"},
}
# Namespaces enforcing one level, for server-side dry runs of pods.
DRY_RUN = {"baseline": "chk-dry-baseline", "restricted": "chk-dry-restricted"}
SCENARIO_NAMESPACES = tuple(NAMESPACES)


@dataclass
class CheckCluster(Cluster):
    """The e2e cluster's API, with the groups the scenario also writes to."""

    batch: client.BatchV1Api = field(init=False)
    rbac: client.RbacAuthorizationV1Api = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        api = config.new_client_from_config(config_file=self.kubeconfig)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)


def container(name: str = "app", mounts: list[dict[str, Any]] | None = None, env: dict[str, str] | None = None,
              restricted: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "image": APP_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"], "volumeMounts": mounts or []}
    if env:
        body["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if restricted:
        body["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return body


def template(app: str, containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
             restricted: bool = False, restart: str = "Always") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "volumes": volumes, "nodeSelector": NOWHERE,
                            "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                            "restartPolicy": restart}
    if restricted:
        spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65532,
                                   "seccompProfile": {"type": "RuntimeDefault"}}
    return {"metadata": {"labels": {"app": app}}, "spec": spec}


def host_path(name: str, path: str, kind: str = "") -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, **({"type": kind} if kind else {})}}


def mount(name: str, path: str, sub_path: str = "") -> dict[str, Any]:
    return {"name": name, "mountPath": path, **({"subPath": sub_path} if sub_path else {})}


def deployment(name: str, tmpl: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                                  "template": tmpl}}


def statefulset(name: str, tmpl: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"replicas": 1, "serviceName": name,
                                                  "selector": {"matchLabels": {"app": name}}, "template": tmpl}}


def daemonset(name: str, tmpl: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}}, "template": tmpl}}


def job(name: str, tmpl: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": tmpl}}


def cronjob(name: str, tmpl: dict[str, Any]) -> dict[str, Any]:
    # Suspended, with a schedule far away: only the Job made below runs it.
    return {"metadata": {"name": name}, "spec": {"schedule": "0 0 1 1 *", "suspend": True,
                                                  "jobTemplate": {"spec": {"backoffLimit": 0, "template": tmpl}}}}


def replicaset(name: str, tmpl: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                                                  "template": tmpl}}


DD = "/var/run/datadog"


def privileged_workloads() -> list[tuple[str, dict[str, Any]]]:
    debug = template("debug", [container(mounts=[mount("run", "/host/run")],
                                         env={"DD_TRACE_AGENT_URL": "unix:///host/run/datadog/apm.socket"})],
                     [host_path("run", "/var/run")], restart="Never")
    return [
        ("Deployment", deployment("web", template("web", [container(mounts=[mount("datadog", DD)])],
                                                  [host_path("datadog", DD, "Directory")]), replicas=2)),
        ("StatefulSet", statefulset("cache", template("cache", [container(mounts=[mount("dsd", f"{DD}/dsd.socket")])],
                                                      [host_path("dsd", f"{DD}/dsd.socket", "Socket")]))),
        ("DaemonSet", daemonset("logs", template("logs", [container(mounts=[mount("docker", "/var/run/docker.sock")])],
                                                 [host_path("docker", "/var/run/docker.sock")]))),
        ("Pod", {"metadata": {"generateName": "debug-", "labels": {"app": "debug"}}, "spec": debug["spec"]}),
        ("Deployment", deployment("clean", template("clean", [container(mounts=[mount("scratch", "/scratch")])],
                                                    [{"name": "scratch", "emptyDir": {}}]))),
        ("DaemonSet", daemonset("datadog-agent", template(
            "datadog-agent", [{**container(mounts=[mount("sockets", DD)]), "image": "gcr.io/datadoghq/agent:7"}],
            [host_path("sockets", DD, "DirectoryOrCreate")]))),
    ]


def baseline_workloads() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("Deployment", deployment("api", template("api", [container(mounts=[mount("apm", f"{DD}/apm.socket")])],
                                                  [host_path("apm", f"{DD}/apm.socket")]))),
        ("CronJob", cronjob("report", template("report", [container(mounts=[mount("run", DD, "datadog")])],
                                               [host_path("run", "/var/run")], restart="Never"))),
        ("Job", job("migrate", template("migrate", [container(mounts=[mount("datadog", DD)])],
                                        [host_path("datadog", "/run/datadog")], restart="Never"))),
    ]


def restricted_workloads() -> list[tuple[str, dict[str, Any]]]:
    """Restricted in every other respect: a patch is all they need."""
    return [
        ("Deployment", deployment("worker", template("worker", [container(mounts=[mount("datadog", DD)],
                                                                          restricted=True)],
                                                     [host_path("datadog", DD)], restricted=True))),
        ("ReplicaSet", replicaset("standalone", template(
            "standalone", [container(mounts=[mount("dsd", f"{DD}/dsd.socket")], restricted=True)],
            [host_path("dsd", f"{DD}/dsd.socket")], restricted=True))),
        ("StatefulSet", statefulset("queue", template(
            "queue", [container("a", [mount("datadog", DD)], restricted=True),
                      container("b", [mount("datadog", "/tmp/apm.sock", "apm.socket")], restricted=True)],
            [host_path("datadog", DD)], restricted=True))),
    ]


WORKLOADS = {
    "chk-privileged": privileged_workloads,
    "chk-baseline": baseline_workloads,
    "chk-restricted": restricted_workloads,
    "chk-warn": lambda: [("Deployment", deployment("legacy", template(
        "legacy", [container(mounts=[mount("datadog", DD)])], [host_path("datadog", DD + "/")])))],
    "chk-hidden": lambda: [("Deployment", deployment("secret-app", template(
        "secret-app", [container(mounts=[mount("datadog", DD)])], [host_path("datadog", DD)])))],
}


def create(cluster: CheckCluster, namespace: str, kind: str, body: dict[str, Any]) -> Any:
    creators: dict[str, Callable[..., Any]] = {
        "Deployment": cluster.apps.create_namespaced_deployment,
        "StatefulSet": cluster.apps.create_namespaced_stateful_set,
        "DaemonSet": cluster.apps.create_namespaced_daemon_set,
        "ReplicaSet": cluster.apps.create_namespaced_replica_set,
        "Job": cluster.batch.create_namespaced_job,
        "CronJob": cluster.batch.create_namespaced_cron_job,
        "Pod": cluster.core.create_namespaced_pod,
    }
    return _unless_exists(lambda: creators[kind](namespace, copy.deepcopy(body)))


def _unless_exists(make: Callable[[], Any]) -> Any:
    """Create, or leave what a run against the same cluster (E2E_CHECK_ENV) made before."""
    try:
        return make()
    except ApiException as err:
        if err.status != 409:
            raise
        return None


def create_namespace(cluster: CheckCluster, name: str, labels: dict[str, str]) -> None:
    _unless_exists(lambda: cluster.core.create_namespace({"metadata": {"name": name, "labels": labels}}))
    # Pods (and their dry runs) need the default ServiceAccount the controller-manager makes.
    wait_for(f"the default ServiceAccount of {name}",
             lambda: _exists(lambda: cluster.core.read_namespaced_service_account("default", name)), timeout=60)


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def _pods(cluster: CheckCluster, namespace: str, app: str) -> int:
    return len(cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def set_up(cluster: CheckCluster) -> None:
    """Namespaces and workloads, then wait until the controllers made every pod admission allows."""
    for name, labels in NAMESPACES.items():
        create_namespace(cluster, name, labels)
    for level, name in DRY_RUN.items():
        create_namespace(cluster, name, {ENFORCE: level})
    for namespace, workloads in WORKLOADS.items():
        for kind, body in workloads():
            if kind == "Pod" and _pods(cluster, namespace, body["metadata"]["labels"]["app"]):
                continue  # a generated name: made once per cluster
            create(cluster, namespace, kind, body)
    # A Job the CronJob owns, as `kubectl create job --from=cronjob/report` makes.
    cron = cluster.batch.read_namespaced_cron_job("report", "chk-baseline")
    manual = {"metadata": {"name": "report-manual", "ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": cron.metadata.uid,
        "controller": True}]},
        "spec": {"backoffLimit": 0, "template": _camel_template("chk-baseline", "report")}}
    _unless_exists(lambda: cluster.batch.create_namespaced_job("chk-baseline", manual))
    expected = {("chk-privileged", "web"): 2, ("chk-privileged", "cache"): 1, ("chk-warn", "legacy"): 1,
                ("chk-hidden", "secret-app"): 1}
    for (namespace, app), count in expected.items():
        wait_for(f"{count} pods of {namespace}/{app}", lambda n=namespace, a=app, c=count: _pods(cluster, n, a) == c,
                 timeout=60)
    # The ReplicaSets of every Deployment, whatever admission did to their pods.
    wait_for("a ReplicaSet per Deployment", lambda: all(
        cluster.apps.list_namespaced_replica_set(ns, label_selector=f"app={name}").items
        for ns, name in [("chk-privileged", "web"), ("chk-baseline", "api"), ("chk-restricted", "worker")]),
        timeout=60)


def _camel_template(namespace: str, cronjob_name: str) -> dict[str, Any]:
    """The CronJob's pod template as the API server serves it (JSON field names)."""
    for kind, body in WORKLOADS[namespace]():
        if kind == "CronJob" and body["metadata"]["name"] == cronjob_name:
            return copy.deepcopy(body["spec"]["jobTemplate"]["spec"]["template"])
    raise KeyError(cronjob_name)
