"""The registry of published volumes, and per-key locks."""

from __future__ import annotations

import signal
import threading

import pytest

from csi_driver.locks import KeyedLocks
from csi_driver.registry import Published, PublishedVolumes
from csi_driver.volumes import Kind, VolumeSource

DSD = VolumeSource("DSDSocket", "/run/datadog/dsd.socket", Kind.SOCKET)
DIR = VolumeSource("DSDSocketDirectory", "/run/datadog", Kind.DIRECTORY)


def test_registry_records_counts_and_spots_other_volumes():
    registry = PublishedVolumes()
    registry.record("/t1", Published("v1", DSD, (1, 2)))
    registry.record("/t2", Published("v2", DSD, (1, 2)))
    registry.record("/t3", Published("", DIR, (1, 3)))  # adopted without the kubelet's record
    assert registry.counts_by_type() == {"DSDSocket": 2, "DSDSocketDirectory": 1}
    assert registry.other_volume_at("/t1", "v1") is None
    assert registry.other_volume_at("/t1", "v9") == "v1"
    assert registry.other_volume_at("/t3", "v9") is None  # unknown id: no conflict to claim
    assert registry.other_volume_at("/nothing", "v1") is None
    registry.forget("/t1")
    registry.forget("/t1")
    assert registry.counts_by_type() == {"DSDSocket": 1, "DSDSocketDirectory": 1}
    assert sorted(registry.snapshot()) == ["/t2", "/t3"]


class Interrupted(Exception):
    pass


def test_an_interrupted_wait_releases_nothing_it_did_not_take():
    """A wait for a held key interrupted by a signal must leave the holder's
    lock held, and the key table clean once the holder is done."""
    locks = KeyedLocks()
    holding, done = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold("volume:a"):
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(5)

    def interrupt(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(Interrupted):
            with locks.hold("target:b", "volume:a"):
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The holder still holds "volume:a": a third caller must wait for it.
    assert not locks._locks["volume:a"][0].acquire(timeout=0.1)
    done.set()
    thread.join(5)
    assert len(locks) == 0
    with locks.hold("volume:a", "target:b"):
        assert len(locks) == 2
