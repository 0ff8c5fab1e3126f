"""Start-up recovery adopts exactly this driver's mounts from the mount table."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from csi_driver import recovery
from csi_driver.config import Config
from csi_driver.registry import PublishedVolumes
from csi_driver.sources import AgentSources
from csi_driver.volume_stats import count_stale
from support import kubelet as layout


@pytest.fixture
def bind(request):
    mounted: list[str] = []

    def mount(source: str, target: str) -> None:
        subprocess.run(["mount", "--bind", source, target], check=True)
        mounted.append(target)

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", target], check=False)


def _target(root: str, volume: str, kind: str, driver: str | None = layout.DRIVER,
            plugin_dir: str = "kubernetes.io~csi") -> tuple[str, str]:
    uid = str(uuid.uuid4())
    directory = os.path.join(root, "pods", uid, "volumes", plugin_dir, volume)
    os.makedirs(directory)
    if driver is not None:
        with open(os.path.join(directory, "vol_data.json"), "w") as f:
            json.dump({"driverName": driver, "volumeHandle": layout.volume_id(uid, volume)}, f)
    target = os.path.join(directory, "mount")
    if kind == "dir":
        os.mkdir(target)
    else:
        open(target, "x").close()
    return target, layout.volume_id(uid, volume)


def test_recovery_adopts_only_this_drivers_volumes(tmp_path, agent, kubelet_root, bind):
    config = Config(kubelet_root_dir=kubelet_root, dsd_host_socket_path=agent.dsd_path,
                    apm_host_socket_path=agent.apm_path, node_id="n")
    ours_dsd, dsd_id = _target(kubelet_root, "dsd", "file")
    ours_dir, _ = _target(kubelet_root, "with space", "dir", driver=None)  # no vol_data.json
    ours_apm, _ = _target(kubelet_root, "apm", "file")
    foreign_socket, _ = _target(kubelet_root, "other", "file", driver="other.csi.example.com")
    foreign_dir, _ = _target(kubelet_root, "data", "dir", driver=None)
    secret, _ = _target(kubelet_root, "token", "dir", driver=None, plugin_dir="kubernetes.io~secret")
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()

    bind(agent.apm_path, ours_apm)
    bind(agent.dsd_path, foreign_socket)
    agent.restart()  # the two socket mounts above now hold dead sockets
    bind(agent.dsd_path, ours_dsd)
    bind(agent.directory, ours_dir)
    bind(str(unrelated), foreign_dir)
    bind(agent.directory, secret)

    registry, sources = PublishedVolumes(), AgentSources(config)
    adopted = recovery.recover(config, registry, sources)
    published = registry.snapshot()
    assert sorted(published) == sorted([ours_dsd, ours_dir, ours_apm])
    assert len(adopted) == 3
    assert published[ours_dsd].source.type == "DSDSocket"
    assert published[ours_dsd].volume_id == dsd_id
    assert published[ours_dir].source.type == "DSDSocketDirectory"  # shared directory: DSD first
    assert published[ours_dir].volume_id == ""  # no vol_data.json to say
    # Re-created since it was mounted: adopted as stale, by its file name.
    assert published[ours_apm].source.type == "APMSocket"
    assert published[ours_apm].source.host_path == agent.apm_path
    assert count_stale(registry, sources) == 1
