"""Fills this mount namespace with unrelated mounts, as a busy node has.

On a node, nearly every mount is a pod volume under the kubelet's directory,
so they all share one parent mount with the targets the driver mounts onto.
The filler does the same: each filler is a bind mount of one small directory
onto its own directory beside the kubelet tree, on the same mount. That
placement matters: the kernel's bind-mount cost grows with the number of
mounts sharing the target's parent mount (the floor rows show it), which a
filler on a separate mount would hide. Fillers only ever grow; the private
namespace takes them away when the benchmark exits.
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

    def grow_to(self, count: int) -> None:
        while self.count < count:
            point = os.path.join(self.base, f"m{self.count:05d}")
            os.mkdir(point)
            floor.bind(self.source, point)
            self.count += 1

    @property
    def last(self) -> str:
        """The newest filler mount: the last line of mountinfo, the worst case for a scan."""
        return os.path.join(self.base, f"m{self.count - 1:05d}")
