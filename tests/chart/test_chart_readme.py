"""The chart README documents every value, with the defaults in values.yaml."""

from __future__ import annotations

import json

from . import values_doc


def test_readme_values_table_matches_values_yaml() -> None:
    readme = values_doc.README_FILE.read_text()
    assert readme == values_doc.readme_with_table(readme), (
        "charts/datadog-csi-driver/README.md is out of date with values.yaml; "
        "run: python tests/chart/values_doc.py --write"
    )


def test_every_value_is_documented_exactly_once() -> None:
    # rows() raises when a value has no description or more than one.
    keys = [row[0] for row in values_doc.rows()]
    assert "sockets.apmHostSocketPath" in keys
    assert "global.apmRegistryAllowList" in keys


def test_every_documented_value_is_in_the_schema_with_its_type() -> None:
    schema = json.loads((values_doc.CHART_DIR / "values.schema.json").read_text())
    json_types = {"bool": "boolean", "int": "integer", "string": "string", "list": "array", "object": "object"}

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    for key, kind, _, _ in values_doc.rows():
        node = schema
        for part in key.split("."):
            node = resolve(node)
            assert part in node.get("properties", {}), f"{key} is not in values.schema.json"
            node = node["properties"][part]
        node = resolve(node)
        if "type" in node:
            assert node["type"] == json_types[kind], key
