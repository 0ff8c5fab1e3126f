"""The store, the links database, single flights and the cleanup, piece by piece."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading

import pytest
from prometheus_client import CollectorRegistry

from csi_driver.config import Config
from csi_driver.library.cache import LibraryCache
from csi_driver.library.cleanup import CleanupTimer
from csi_driver.library.flights import Flights
from csi_driver.library.links import TAG_TTL, Library, Link, LinksDatabase
from csi_driver.library.metrics import LibraryMetrics
from csi_driver.library.store import ContentMissing, Store, remove_tree

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
CONTENT = "datadog-init/package"


def stored(store: Store, digest: str = DIGEST, files: dict[str, str] | None = None) -> None:
    with store.scratch() as scratch:
        for name, text in (files or {f"{CONTENT}/version": "1\n"}).items():
            path = os.path.join(scratch.path, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        store.commit(scratch, digest)


def test_an_entry_appears_whole_or_not_at_all(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(RuntimeError), store.scratch() as scratch:
        open(os.path.join(scratch.path, "half"), "w").close()
        raise RuntimeError("the pull failed")
    assert store.digests() == [] and os.listdir(store.scratch_root) == []
    stored(store)
    assert store.has(DIGEST) and store.digests() == [DIGEST]
    assert oct(os.stat(store.entry(DIGEST)).st_mode & 0o777) == oct(0o755)
    stored(store, files={f"{CONTENT}/version": "2\n"})  # a second copy of the same digest
    with open(os.path.join(store.entry(DIGEST), CONTENT, "version")) as f:
        assert f.read() == "1\n"
    assert os.listdir(store.scratch_root) == []


def test_leftovers_of_a_crash_are_removed_when_the_store_opens(tmp_path):
    store = Store(str(tmp_path))
    leftover = os.path.join(store.scratch_root, "pull-crashed", "deep")
    os.makedirs(leftover)
    os.chmod(os.path.dirname(leftover), 0o500)  # read-only directories, as images hold
    Store(str(tmp_path))
    assert os.listdir(store.scratch_root) == []


def test_the_content_must_be_a_real_directory_inside_the_entry(tmp_path):
    store = Store(str(tmp_path))
    stored(store, files={"datadog-init/elsewhere/version": "x"})
    os.symlink("elsewhere", os.path.join(store.entry(DIGEST), "datadog-init", "package"))
    with pytest.raises(ContentMissing) as err:
        store.open_content(DIGEST, CONTENT)
    assert "symlink" in err.value.reason
    stored(store, OTHER)
    fd = store.open_content(OTHER, CONTENT)
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == os.path.join(store.entry(OTHER), CONTENT)
    finally:
        os.close(fd)
    with pytest.raises(ContentMissing):
        store.open_content(OTHER, "opt/datadog-packages/datadog-apm-inject")
    with pytest.raises(ValueError):
        store.entry("../../etc")


def test_detached_entries_leave_the_store_at_once(tmp_path):
    store = Store(str(tmp_path))
    stored(store)
    away = store.detach(DIGEST)
    assert away is not None and not store.has(DIGEST)
    remove_tree(away)
    assert os.listdir(store.scratch_root) == []
    assert store.detach(DIGEST) is None


def test_links_and_tags_survive_a_reopen(tmp_path):
    now = [1000.0]
    path = str(tmp_path / "libraries.db")
    db = LinksDatabase(path, clock=lambda: now[0])
    db.add_library(Library(DIGEST, "dd-lib-java-init", "gcr.io/datadoghq", 42, None))
    db.link(Link("/pods/a/mount", "vol-a", DIGEST))
    db.link(Link("/pods/b/mount", "vol-b", DIGEST))
    db.remember_tag("gcr.io/datadoghq/dd-lib-java-init:v1", DIGEST)
    db.remember_platform_digest(OTHER, DIGEST)
    db.close()

    now[0] += TAG_TTL - 1
    db = LinksDatabase(path, clock=lambda: now[0])
    assert db.link_counts()[DIGEST] == 2 and db.link_at("/pods/a/mount").volume_id == "vol-a"
    assert db.tag("gcr.io/datadoghq/dd-lib-java-init:v1") == DIGEST
    assert db.platform_digest(OTHER) == DIGEST
    assert db.unlink("/pods/a/mount").volume_id == "vol-a"
    assert db.library(DIGEST).unused_since is None  # still used by b
    db.unlink("/pods/b/mount")
    assert db.library(DIGEST).unused_since == now[0]
    assert db.unlink("/pods/b/mount") is None
    now[0] += 2
    assert db.tag("gcr.io/datadoghq/dd-lib-java-init:v1") is None  # older than an hour
    db.forget_expired_tags()
    db.link(Link("/pods/c/mount", "vol-c", DIGEST))
    assert db.library(DIGEST).unused_since is None
    db.remove_library(DIGEST)
    assert db.platform_digest(OTHER) is None
    db.close()


def test_an_unreadable_database_is_set_aside(tmp_path):
    path = tmp_path / "libraries.db"
    path.write_bytes(b"this is not a database" * 100)
    db = LinksDatabase(str(path))
    assert db.libraries() == {} and db.links() == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("libraries.db.unreadable-")]
    db.close()


def test_a_failed_write_leaves_the_mirror_as_the_file_is(tmp_path):
    db = LinksDatabase(str(tmp_path / "libraries.db"))
    db.add_library(Library(DIGEST, "p", "r", 1, None))
    db._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON links BEGIN SELECT RAISE(ABORT, 'no'); END")
    with pytest.raises(sqlite3.DatabaseError):
        db.link(Link("/pods/a/mount", "vol-a", DIGEST))
    assert db.links() == {} and db.link_counts()[DIGEST] == 0
    db.close()


def test_one_run_per_key_shared_by_every_caller(tmp_path):
    flights: Flights[int] = Flights()
    runs: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def work() -> int:
        runs.append("pull")
        entered.set()
        release.wait(30)
        return 7

    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(flights.run("d", work, 30)))
    first.start()
    entered.wait(30)
    others = [threading.Thread(target=lambda: results.append(flights.run("d", work, 30)))
              for _ in range(9)]
    for thread in others:
        thread.start()
    # Another key is not held up by the first one's run.
    assert flights.run("other", lambda: 1, 30) == 1
    release.set()
    for thread in [first, *others]:
        thread.join()
    assert runs == ["pull"] and results == [7] * 10

    def fails() -> int:
        raise OSError("registry down")

    with pytest.raises(OSError):
        flights.run("d", fails, 30)
    assert not flights.running("d")


def test_the_cleanup_timer_runs_when_poked_and_never_dies(tmp_path):
    collected: list[str] = []
    done = threading.Event()
    passes = [0]

    def due(now: float) -> tuple[list[str], float | None]:
        passes[0] += 1
        if passes[0] == 1:
            raise RuntimeError("a broken pass is logged, not fatal")
        return (["d"], None) if passes[0] == 3 else ([], None)

    def collect(digest: str) -> None:
        collected.append(digest)
        done.set()

    timer = CleanupTimer(due, collect)
    timer.start()
    while not done.wait(0.2):
        timer.poke()
    timer.stop()
    assert collected == ["d"]


def test_a_library_still_mounted_somewhere_is_never_deleted(tmp_path, kubelet_root):
    config = Config(storage_path=str(tmp_path), kubelet_root_dir=kubelet_root,
                    library_cleanup_delay=0.0, node_id="t")
    store = Store(str(tmp_path))
    stored(store)
    db = LinksDatabase(str(tmp_path / "libraries.db"))
    db.add_library(Library(DIGEST, "dd-lib-java-init", "gcr.io/datadoghq", 2, 0.0))
    registry = CollectorRegistry()
    cache = LibraryCache(config, store, db, None, LibraryMetrics(registry, ()),  # type: ignore[arg-type]
                         str(tmp_path / "ld.so.preload"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", os.path.join(store.entry(DIGEST), CONTENT), str(elsewhere)],
                   check=True)
    try:
        assert registry.get_sample_value("datadog_csi_driver_libraries_cached",
                                         {"library": "dd-lib-java-init"}) == 1
        assert cache._due(1.0)[0] == [DIGEST]
        cache._collect(DIGEST)
        assert store.has(DIGEST)
        assert registry.get_sample_value("datadog_csi_driver_library_cleanup_total", {
            "library": "dd-lib-java-init", "status": "skipped_in_use", "strategy": "immediate"}) == 1
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)
    cache._collect(DIGEST)
    assert not store.has(DIGEST) and db.library(DIGEST) is None
    assert registry.get_sample_value("datadog_csi_driver_library_cleanup_total", {
        "library": "dd-lib-java-init", "status": "success", "strategy": "immediate"}) == 1
    assert registry.get_sample_value("datadog_csi_driver_libraries_cached",
                                     {"library": "dd-lib-java-init"}) == 0
    db.close()
