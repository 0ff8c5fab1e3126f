"""Snapshots of the mount table and of a directory tree, to prove a call left
nothing behind."""

from __future__ import annotations

import os


def mount_table() -> list[str]:
    """Mount points and their sources, without ids that change on every mount."""
    rows = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            rows.append(f"{fields[3]} {fields[4]}")
    return sorted(rows)


def mounts_under(prefix: str) -> list[str]:
    return [row for row in mount_table() if row.split(" ", 1)[1].startswith(prefix)]


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
