"""Posting the events through the Kubernetes API (the ``kubernetes`` client).

Imported only when the first event is due: the client's import costs more
than the rest of the driver's start-up. Events are core/v1 Events on the pod
(``involvedObject`` with its uid), which ``kubectl describe pod`` and
``kubectl get events`` show; ``source`` and ``reportingComponent`` name the
driver, ``reportingInstance`` and ``source.host`` the node. What the driver
may do there is only ``events: create`` (and ``patch``, granted with it by the
chart for clients that update an event's count).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from csi_driver.config import Config
from csi_driver.stale_events.check import REASON, PostFailed, StaleVolume

# Seconds to connect, then to get an answer: an API server that hangs costs the
# checking thread this much per check, never a CSI call.
TIMEOUT = (5, 10)
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def api_access(config: Config) -> str | None:
    """Why events cannot be posted from here, or None when they can be tried."""
    if config.kubeconfig:
        return None
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "not running in a cluster and no --kubeconfig given"
    if not os.path.exists(SERVICE_ACCOUNT_TOKEN):
        return (f"no service account token at {SERVICE_ACCOUNT_TOKEN} (the chart mounts one when "
                "podEvents.enabled is true)")
    return None


class KubeEvents:
    def __init__(self, config: Config) -> None:
        self._config = config
        try:
            from kubernetes import client
            from kubernetes import config as kube_config

            configuration = client.Configuration()
            if config.kubeconfig:
                kube_config.load_kube_config(config_file=config.kubeconfig,
                                             client_configuration=configuration)
            else:
                kube_config.load_incluster_config(client_configuration=configuration)
            # A failed post is tried again at the next check, not at once.
            configuration.retries = 0
            api = client.ApiClient(configuration)
        except Exception as err:  # the client's own ConfigException, or a broken file
            raise PostFailed(f"the Kubernetes API client cannot be configured: {err}", retry=True,
                             kind="configuration") from None
        self._events = client.CoreV1Api(api)
        self._api_error: type[Exception] = client.ApiException

    def post(self, volume: StaleVolume) -> None:
        try:
            self._events.create_namespaced_event(volume.pod.namespace, self.body(volume),
                                                 _request_timeout=TIMEOUT)
        except self._api_error as err:
            status = getattr(err, "status", 0) or 0
            if status == 409:  # posted by an earlier run of the driver
                return
            raise _refused(status, str(getattr(err, "reason", "")), volume) from None
        except Exception as err:  # connection refused, timed out, TLS: the API is unreachable
            raise PostFailed(f"the Kubernetes API is unreachable ({type(err).__name__}: "
                             f"{str(err)[:200]})", retry=True, kind="unreachable") from None

    def body(self, volume: StaleVolume) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        driver, node = self._config.driver_name, self._config.node_id
        pod = volume.pod
        return {
            "metadata": {"name": volume.event_name, "namespace": pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                               "name": pod.name, "uid": pod.uid},
            "type": "Warning",
            "reason": REASON,
            "message": volume.message(self._config),
            "source": {"component": driver, "host": node},
            "reportingComponent": driver,
            "reportingInstance": node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }


def _refused(status: int, reason: str, volume: StaleVolume) -> PostFailed:
    if status in (401, 403):
        return PostFailed(f"the Kubernetes API refused ({status} {reason}): the driver's service "
                          "account needs permission to create events (the chart's ClusterRole grants "
                          "events create and patch)", retry=True, kind=f"refused {status}")
    if status == 404:
        return PostFailed(f"namespace {volume.pod.namespace} is gone", retry=False)
    if status in (400, 422):
        return PostFailed(f"the Kubernetes API rejected the event ({status} {reason})", retry=False)
    return PostFailed(f"the Kubernetes API answered {status} {reason}", retry=True, kind=f"answered {status}")
