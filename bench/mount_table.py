"""Fills this mount namespace with unrelated mounts, as a busy node has.

On a node, nearly every mount is a pod volume under the kubelet's directory,
so they all share one parent mount with the targets the driver mounts onto.
The filler does the same: each filler is a bind mount of one small directory
onto its own directory beside the kubelet tree, on the same mount. That
placement matters: the kernel's bind-mount cost grows with the number of
mounts sharing the *source's* mount (the "source on the fillers' mount"
floor row shows it), so the agent's socket directory gets a mount of its own,
as the hostPath volume holding it has in the driver's container. Whatever
fillers are left when the benchmark exits go with its private namespace.
"""

from __future__ import annotations

import os

from bench import floor


class Filler:
    def __init__(self, base: str) -> None:
        self.base = base
        self.source = os.path.join(base, "source")
        self.count = 0
        os.makedirs(self.source, exist_ok=True)

    def _point(self, index: int) -> str:
        return os.path.join(self.base, f"m{index:05d}")

    def resize(self, count: int) -> None:
        """Add or remove filler mounts (newest first) until there are ``count``."""
        while self.count < count:
            point = self._point(self.count)
            os.makedirs(point, exist_ok=True)
            floor.bind(self.source, point)
            self.count += 1
        while self.count > count:
            self.count -= 1
            floor.unmount(self._point(self.count))

    @property
    def last(self) -> str:
        """The newest filler mount: the last line of mountinfo, the worst case for a scan."""
        return self._point(self.count - 1)
