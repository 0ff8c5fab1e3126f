"""RFC 6902 JSON patch, for manifests whose objects the API server cannot patch
(a Pod's volumes, a Job's template): ``add``, ``remove``, ``replace`` and
``test``, with RFC 6901 pointers. Written from the RFC, independently of the
check's own code, so that a test applying the check's patches proves them."""

from __future__ import annotations

import copy
from typing import Any


class PatchFailed(Exception):
    pass


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchFailed(f"not a JSON pointer: {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchFailed(f"not an array index: {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not adding):
        raise PatchFailed(f"index {index} out of range (length {len(container)})")
    return index


def _parent(document: Any, pointer: str) -> tuple[Any, str]:
    *path, last = _tokens(pointer)
    node = document
    for token in path:
        if isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise PatchFailed(f"{pointer}: {token!r} does not exist")
    return node, last


def _get(document: Any, pointer: str) -> Any:
    if pointer == "":
        return document
    parent, last = _parent(document, pointer)
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    if not isinstance(parent, dict) or last not in parent:
        raise PatchFailed(f"{pointer} does not exist")
    return parent[last]


def _in_list(parent: list[Any], last: str, op: dict[str, Any]) -> None:
    index = _index(parent, last, adding=op["op"] == "add")
    if op["op"] == "add":
        parent.insert(index, copy.deepcopy(op["value"]))
    elif op["op"] == "remove":
        del parent[index]
    else:
        parent[index] = copy.deepcopy(op["value"])


def _in_object(parent: dict[str, Any], last: str, op: dict[str, Any]) -> None:
    if op["op"] == "remove":
        del parent[last]
    else:
        parent[last] = copy.deepcopy(op["value"])


def _operate(document: Any, op: dict[str, Any]) -> None:
    kind, pointer = op["op"], op["path"]
    if kind == "test":
        if _get(document, pointer) != op["value"]:
            raise PatchFailed(f"test failed at {pointer}: {_get(document, pointer)!r} != {op['value']!r}")
        return
    if kind not in ("add", "remove", "replace"):
        raise PatchFailed(f"operation {kind!r} is not supported here")
    if kind != "add":
        _get(document, pointer)  # must exist
    parent, last = _parent(document, pointer)
    if isinstance(parent, list):
        _in_list(parent, last, op)
    elif isinstance(parent, dict):
        _in_object(parent, last, op)
    else:
        raise PatchFailed(f"{pointer}: parent is not a container")


def apply(document: Any, operations: list[dict[str, Any]]) -> Any:
    """The patched copy; the original is left alone, and nothing applies when one operation fails."""
    patched = copy.deepcopy(document)
    for op in operations:
        _operate(patched, op)
    return patched
