"""The report on the scenario: golden table and JSON, one entry per workload
whatever its replicas, every namespace or a chosen few, any page size.

Golden files are in ``golden/``; names the API server generates are replaced
by ``#####``. ``E2E_CHECK_UPDATE_GOLDEN=1`` rewrites them from this run
(review the diff before committing it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from e2e_check.scenario import SCENARIO_NAMESPACES

GOLDEN = Path(__file__).parent / "golden"
# generateName suffixes: five characters from the API server's alphabet.
GENERATED = re.compile(r"\b(debug-)[bcdfghjklmnpqrstvwxz2456789]{5}\b")
SCOPE = [arg for namespace in SCENARIO_NAMESPACES for arg in ("-n", namespace)]


def normalised(text: str) -> str:
    """Generated suffixes as ``#####``: as long as they are, so the table keeps its columns."""
    return GENERATED.sub(r"\1#####", text)


def compare_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    text = normalised(text).rstrip("\n") + "\n"
    if os.environ.get("E2E_CHECK_UPDATE_GOLDEN") == "1":
        path.write_text(text)
        pytest.skip(f"rewrote {path}")
    assert text == path.read_text(), f"the report differs from {path}; run with E2E_CHECK_UPDATE_GOLDEN=1 to " \
                                     "see the difference as a diff of that file"


def test_table_matches_the_golden_file(check):
    run = check(*SCOPE)
    assert run.code == 1, run.err
    assert all(len(line) <= 80 for line in run.out.splitlines()), "the table is wider than 80 columns"
    compare_golden("report.txt", run.out)


def test_json_with_patches_matches_the_golden_file(check):
    run = check(*SCOPE, "--output", "json", "--patch")
    assert run.code == 1, run.err
    compare_golden("report.json", run.out)


def test_a_workload_is_reported_once_whatever_its_replicas(check):
    """Two pods of a Deployment, its ReplicaSet, a CronJob's Job and its pod: one entry each owner."""
    report = check(*SCOPE, "-o", "json").json()
    keys = [(w["namespace"], w["kind"], w["name"]) for w in report["workloads"]]
    assert len(keys) == len(set(keys))
    web = next(w for w in report["workloads"] if w["name"] == "web")
    assert web["kind"] == "Deployment" and web["pods"] == 2
    assert ("chk-baseline", "CronJob", "report") in keys
    assert not [k for k in keys if k[1] in ("ReplicaSet", "Job") and k[2].startswith(("web", "report"))]
    assert ("chk-privileged", "Deployment", "clean") not in keys
    assert [(e["kind"], e["name"]) for e in report["exempt"]] == [("DaemonSet", "datadog-agent")]


def test_every_namespace_by_default_and_small_pages_agree(check):
    """Cluster-wide lists (the default) in pages of 2 find what per-namespace lists find."""
    chosen = check(*SCOPE, "-o", "json").json()
    everywhere = check("-o", "json", "--page-size", "2").json()
    assert everywhere["namespaces"]["selected"] == "all"
    assert everywhere["namespaces"]["scanned"] > len(SCENARIO_NAMESPACES)
    # Other tests of the package may have added namespaces of their own since.
    assert [w for w in everywhere["workloads"] if w["namespace"] in SCENARIO_NAMESPACES] == chosen["workloads"]


def test_yaml_is_the_json_document(check):
    yaml = pytest.importorskip("yaml")
    as_yaml = yaml.safe_load(check(*SCOPE, "-o", "yaml").out)
    as_json = json.loads(check(*SCOPE, "-o", "json").out)
    assert as_yaml == as_json


def test_an_unknown_namespace_is_an_error_not_an_empty_report(check):
    run = check("-n", "chk-does-not-exist", "--skip-installation", "-o", "json")
    assert run.code == 2
    assert run.json()["errors"] == [{"namespace": "chk-does-not-exist", "resource": "namespaces",
                                     "message": "namespace not found"}]


def test_an_unreachable_api_server_exits_2_with_a_message(tmp_path, cluster_env):
    from e2e_check.conftest import run_check

    kubeconfig = tmp_path / "kubeconfig"
    text = Path(cluster_env["KUBECONFIG"]).read_text()
    kubeconfig.write_text(re.sub(r"server: https://127\.0\.0\.1:\d+", "server: https://127.0.0.1:1", text))
    run = run_check(str(kubeconfig))
    assert run.code == 2
    assert "cannot reach the API server at https://127.0.0.1:1" in run.err
    assert run.out == ""
