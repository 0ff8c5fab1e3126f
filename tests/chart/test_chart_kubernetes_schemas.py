"""Every rendered object is valid against the Kubernetes API's OpenAPI schemas.

kubernetes-validate ships those schemas, so this runs offline. Strict mode
also rejects fields Kubernetes does not know, which catches misspelt or
misplaced keys in the templates. The GKE AllowlistSynchronizer is a custom
resource the package has no schema for; its structure is checked by hand.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from .chart_helpers import render
from .scenarios import SCENARIOS

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the
# newest the pinned kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


def assert_valid_allowlist_synchronizer(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "auto.gke.io/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert isinstance(obj["metadata"]["name"], str) and obj["metadata"]["name"]
    assert "namespace" not in obj["metadata"], "AllowlistSynchronizer is cluster-scoped"
    assert set(obj["spec"]) == {"allowlistPaths"}
    paths = obj["spec"]["allowlistPaths"]
    assert isinstance(paths, list) and paths
    for path in paths:
        assert isinstance(path, str) and path.startswith("Datadog/") and path.endswith(".yaml"), path


def assert_valid(obj: dict[str, Any], version: str) -> None:
    if obj["kind"] == "AllowlistSynchronizer":
        assert_valid_allowlist_synchronizer(obj)
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path)
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']} at {path}: {error.message}", pytrace=False)
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(error.message, pytrace=False)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_objects_match_kubernetes_schemas(scenario: str, version: str) -> None:
    values, extra_args = SCENARIOS[scenario]
    objects = render(values, extra_args)
    assert objects, "nothing rendered"
    for obj in objects:
        assert_valid(obj, version)


def test_strict_validation_catches_an_unknown_field() -> None:
    """The validator really is strict: a stray field in a container is refused."""
    ds = next(o for o in render() if o["kind"] == "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["mountPropagation"] = "Bidirectional"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES_VERSIONS[-1], strict=True)
