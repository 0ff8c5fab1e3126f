"""Reading the API server with the ``kubernetes`` client: credentials, paging, errors.

Imported only when the check runs, so the driver never loads the client.
Credentials: ``--kubeconfig``/``--context`` when given; else the pod's service
account when running in a cluster; else the kubeconfig ``$KUBECONFIG`` or
``~/.kube/config`` names, as kubectl does.
"""

from __future__ import annotations

import json
import os
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from csi_driver.check.resources import ApiError, Expired, Forbidden, Obj, Resource, Unreachable, list_pages

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# (connect, read) seconds per request.
TIMEOUT = (10.0, 60.0)


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(SERVICE_ACCOUNT_TOKEN)


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    try:
        if kubeconfig is None and context is None and _in_cluster():
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as err:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ApiError(f"no usable credentials ({where}): {err}; pass --kubeconfig or --context") from None


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


class KubeApi:
    """``resources.Api`` over the API server's REST paths."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, page_size: int = 500) -> None:
        self._client = _api_client(kubeconfig, context)
        self._page_size = page_size

    @property
    def server(self) -> str:
        return str(self._client.configuration.host)

    def _get(self, path: str, query: list[tuple[str, Any]]) -> Obj:
        try:
            response = self._client.call_api(
                path, "GET", query_params=query, header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
                _request_timeout=TIMEOUT)
        except ApiException as err:
            if err.status == 403:
                raise Forbidden(f"forbidden: {_message(err)}") from None
            if err.status == 410:
                raise Expired(_message(err)) from None
            if err.status == 404:
                raise LookupError(path) from None
            raise ApiError(f"GET {path}: HTTP {err.status}: {_message(err)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise Unreachable(f"cannot reach the API server at {self.server}: {err}") from None
        document: Obj = json.loads(response.data)
        return document

    def list(self, resource: Resource, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        path = resource.path(namespace)
        selector = [("labelSelector", label_selector)] if label_selector else []

        def page(token: str) -> Obj:
            return self._get(path, [("limit", self._page_size), *selector, *([("continue", token)] if token else [])])

        try:
            try:
                return list_pages(page)
            except Expired:
                return list_pages(page)  # the list changed too much while paging: once more from the start
        except LookupError:
            raise ApiError(f"the API server does not serve {resource.plural} ({resource.group_version})") from None

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self._get(resource.path(namespace, name), [])
        except LookupError:
            return None
