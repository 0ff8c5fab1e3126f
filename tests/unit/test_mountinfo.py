"""The one mountinfo parser: escapes decoded, per-mount options split, stacks in order."""

from __future__ import annotations

import os

from csi_driver import mounts

TABLE = (
    "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "40 22 0:35 /run/data\\040dog /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/a\\040b/mount "
    "ro,nosuid,nodev,noexec,relatime shared:1 - tmpfs tmpfs rw\n"
    "41 40 0:35 /run/other /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/a\\040b/mount "
    "rw,relatime - tmpfs tmpfs rw\n"
    "42 1 0:36 /gone//deleted /x\\011tab\\012newline\\134backslash rw - tmpfs tmpfs rw\n"
    "43 1 0:37 / /bad/\\377name rw - tmpfs tmpfs rw\n"
)


def test_fields_are_unescaped_and_options_split(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(TABLE)
    entries = list(mounts.mount_table(str(table)))
    assert [e.mount_point for e in entries] == [
        "/proc",
        "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/a b/mount",
        "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/a b/mount",
        "/x\ttab\nnewline\\backslash",
        os.fsdecode(b"/bad/\xffname"),
    ]
    assert entries[1].root == "/run/data dog"
    assert entries[1].options == ("ro", "nosuid", "nodev", "noexec", "relatime")
    assert entries[3].root == "/gone//deleted"


def test_the_topmost_mount_of_a_stack_is_the_last_listed(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(TABLE)
    top = mounts.entry_at("/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/a b/mount", str(table))
    assert top is not None and top.root == "/run/other" and top.options == ("rw", "relatime")
    assert mounts.entry_at("/not/mounted", str(table)) is None
