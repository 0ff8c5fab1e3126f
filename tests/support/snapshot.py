"""Snapshots of the mount table and of a directory tree, to prove a call left
nothing behind."""

from __future__ import annotations

import os

from csi_driver import mounts


def mount_table() -> list[tuple[str, str]]:
    """(source root, mount point) of every mount, without ids that change on every mount."""
    return sorted((entry.root, entry.mount_point) for entry in mounts.mount_table())


def mounts_under(prefix: str) -> list[tuple[str, str]]:
    return [row for row in mount_table() if row[1].startswith(prefix)]


def tree(root: str) -> list[tuple[str, str, int]]:
    """Every entry below ``root`` as (relative path, kind, size)."""
    entries = []
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            kind = ("dir" if os.path.isdir(path) and not os.path.islink(path)
                    else "link" if os.path.islink(path) else "file")
            entries.append((os.path.relpath(path, root), kind, st.st_size if kind == "file" else 0))
    return sorted(entries)
