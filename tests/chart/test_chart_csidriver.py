"""The CSIDriver object the kubelet reads before calling the driver."""

from __future__ import annotations

from .chart_helpers import DRIVER_NAME, args_by_flag, daemonset, driver, only, render
from .scenarios import SCENARIOS


def csidriver(values: dict | None = None, extra_args: tuple[str, ...] = ()) -> dict:
    return only(render(values, extra_args), "CSIDriver")


def test_csidriver_spec() -> None:
    obj = csidriver()
    assert obj["apiVersion"] == "storage.k8s.io/v1"
    assert obj["metadata"]["name"] == DRIVER_NAME
    assert "namespace" not in obj["metadata"]
    assert obj["spec"] == {
        "attachRequired": False,
        "podInfoOnMount": True,
        "fsGroupPolicy": "None",
        "volumeLifecycleModes": ["Ephemeral", "Persistent"],
    }


def test_csidriver_name_is_the_name_the_driver_registers() -> None:
    assert args_by_flag(driver(daemonset()))["--driver-name"] == csidriver()["metadata"]["name"]


def test_csidriver_advertises_apm_support() -> None:
    annotation = "csi.datadoghq.com/apm-enabled"
    assert csidriver()["metadata"]["annotations"][annotation] == "true"
    values, _ = SCENARIOS["apm-disabled"]
    assert csidriver(values)["metadata"]["annotations"][annotation] == "false"


def test_csidriver_name_ignores_name_overrides() -> None:
    for scenario in ("name-overrides", "fullname-override"):
        values, _ = SCENARIOS[scenario]
        assert csidriver(values)["metadata"]["name"] == DRIVER_NAME
