"""A node's life as the kubelet drives it: a burst of pods, a kubelet restart,
and every pod deleted, with the mount table checked at each step."""

from __future__ import annotations

import os
from collections import Counter

import grpc

from conformance.kubelet import Kubelet, mixed_pods, mounts_by_target, targets_of
from support.snapshot import mount_table, tree

PODS = 100
THREADS = 32


def test_burst_restart_and_deletion(driver, agent, kubelet_root):
    pods_dir = os.path.join(kubelet_root, "pods")
    mounts_before, files_before = mount_table(), tree(pods_dir)
    pods = mixed_pods(PODS, agent.dsd_path, agent.apm_path)
    expected = Counter({target: 1 for target in targets_of(kubelet_root, pods)})
    kubelet = Kubelet(kubelet_root, driver.socket_path)

    # 100 pods, 200 volumes of every form, started at once.
    kubelet.start_pods(pods, threads=THREADS)
    assert mounts_by_target(pods_dir) == expected
    assert kubelet.failures() == []
    types = Counter(v.attributes.get("type") or v.attributes["mode"] for p in pods for v in p.volumes)
    assert len(types) == 7

    # The kubelet restarts and sets every volume up again: still one mount each.
    kubelet = kubelet.restart()
    kubelet.start_pods(pods, threads=THREADS)
    assert mounts_by_target(pods_dir) == expected
    assert kubelet.failures() == []
    assert {a.code for a in kubelet.attempts} == {grpc.StatusCode.OK}

    # Every pod deleted: the mount table and the pods directory are as before.
    kubelet.delete_pods(pods, threads=THREADS)
    assert kubelet.failures("unpublish") == []
    assert mount_table() == mounts_before
    assert tree(pods_dir) == files_before
