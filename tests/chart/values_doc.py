"""The chart README's values table, derived from values.yaml.

Each documented value has a comment `# <key> -- <description>` (continued on
the following comment lines) just above it in values.yaml. The table lists
those keys with their type and default. A key documented as a whole (such as
`driver.securityContext`) covers every key below it.

Regenerate the table after changing values.yaml:

    python tests/chart/values_doc.py --write
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "datadog-csi-driver"
VALUES_FILE = CHART_DIR / "values.yaml"
README_FILE = CHART_DIR / "README.md"
TABLE_START = "<!-- values-table:start -->"
TABLE_END = "<!-- values-table:end -->"

_DOC_LINE = re.compile(r"^\s*# ([A-Za-z0-9_.]+) -- (.*)$")
_CONTINUATION = re.compile(r"^\s*# ?(.*)$")


def descriptions(text: str) -> dict[str, str]:
    """Documented keys and their descriptions, in file order."""
    found: dict[str, str] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = _DOC_LINE.match(line)
        if not match:
            continue
        key, parts = match.group(1), [match.group(2).strip()]
        for following in lines[index + 1:]:
            cont = _CONTINUATION.match(following)
            if not cont or _DOC_LINE.match(following):
                break
            parts.append(cont.group(1).strip())
        if key in found:
            raise ValueError(f"{key} is documented twice")
        found[key] = " ".join(p for p in parts if p)
    return found


def lookup(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"documented key {key} is not in values.yaml")
        node = node[part]
    return node


def leaves(values: Any, prefix: str = "") -> list[str]:
    """Keys of every value that is not a non-empty mapping."""
    if isinstance(values, dict) and values:
        found: list[str] = []
        for key, value in values.items():
            found.extend(leaves(value, f"{prefix}.{key}" if prefix else key))
        return found
    return [prefix]


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"no README type for {value!r}")


def rows() -> list[tuple[str, str, str, str]]:
    text = VALUES_FILE.read_text()
    values = yaml.safe_load(text)
    documented = descriptions(text)
    for leaf in leaves(values):
        covering = [k for k in documented if leaf == k or leaf.startswith(k + ".")]
        if len(covering) != 1:
            raise ValueError(f"value {leaf} is documented {len(covering)} times in values.yaml, not once")
    table = []
    for key in sorted(documented):
        value = lookup(values, key)
        default = json.dumps(value, separators=(",", ":"))
        table.append((key, type_name(value), f"`{default}`", documented[key]))
    return table


def table() -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    lines += [f"| {key} | {kind} | {default} | {text} |" for key, kind, default, text in rows()]
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    start, end = readme.index(TABLE_START), readme.index(TABLE_END)
    return readme[: start + len(TABLE_START)] + "\n" + table() + "\n" + readme[end:]


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        README_FILE.write_text(readme_with_table(README_FILE.read_text()))
        return 0
    if argv:
        print(__doc__)
        return 2
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
