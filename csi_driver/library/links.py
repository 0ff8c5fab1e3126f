"""What the library cache must remember across restarts, in one SQLite file.

- ``libraries``: every stored library (digest, package, registry, size) and
  since when no volume uses it (the cleanup delay counts from there);
- ``links``: which target (volume) mounts which library, so that an unpublish
  after a restart, which carries only the volume id and target, still releases
  its library;
- ``tags``: tag -> manifest digest, trusted for an hour;
- ``resolutions``: image-index digest -> this platform's manifest digest, so a
  digest reference the store already holds needs no registry call.

Every table is mirrored in memory, so reads (every publish) never touch the
file; writes go to both, the file first. WAL journaling keeps a write to a few
pages, and a write that fails leaves the mirror unchanged.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)
DATABASE = "libraries.db"
TAG_TTL = 3600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS libraries (
    digest TEXT PRIMARY KEY, package TEXT NOT NULL, registry TEXT NOT NULL,
    size INTEGER NOT NULL, unused_since REAL);
CREATE TABLE IF NOT EXISTS links (
    target_path TEXT PRIMARY KEY, volume_id TEXT NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    reference TEXT PRIMARY KEY, digest TEXT NOT NULL, resolved_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS resolutions (
    digest TEXT PRIMARY KEY, platform_digest TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Library:
    digest: str
    package: str
    registry: str
    size: int  # bytes unpacked
    unused_since: float | None  # wall-clock time; None while a volume uses it


@dataclass(frozen=True)
class Link:
    target_path: str
    volume_id: str
    digest: str


class LinksDatabase:
    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._db = _connect(path)
        self._load()

    def _load(self) -> None:
        self._libraries: dict[str, Library] = {}
        self._links: dict[str, Link] = {}
        self._tags: dict[str, tuple[str, float]] = {}
        for digest, package, registry, size, unused_since in self._db.execute(
                "SELECT digest, package, registry, size, unused_since FROM libraries"):
            self._libraries[digest] = Library(digest, package, registry, size, unused_since)
        for target_path, volume_id, digest in self._db.execute(
                "SELECT target_path, volume_id, digest FROM links"):
            self._links[target_path] = Link(target_path, volume_id, digest)
        for reference, digest, resolved_at in self._db.execute(
                "SELECT reference, digest, resolved_at FROM tags"):
            self._tags[reference] = (digest, resolved_at)
        self._resolutions: dict[str, str] = dict(
            self._db.execute("SELECT digest, platform_digest FROM resolutions"))

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction; if it fails, the mirror is read back from the file."""
        with self._lock:
            try:
                with self._db:
                    yield
            except BaseException:
                self._load()
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def libraries(self) -> dict[str, Library]:
        with self._lock:
            return dict(self._libraries)

    def library(self, digest: str) -> Library | None:
        return self._libraries.get(digest)

    def links(self) -> dict[str, Link]:
        with self._lock:
            return dict(self._links)

    def link_at(self, target_path: str) -> Link | None:
        return self._links.get(target_path)

    # ---------------------------------------------------------- libraries

    def add_library(self, library: Library) -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO libraries VALUES (?, ?, ?, ?, ?)",
                             (library.digest, library.package, library.registry, library.size,
                              library.unused_since))
            self._libraries[library.digest] = library

    def remove_library(self, digest: str) -> None:
        with self._write():
            self._db.execute("DELETE FROM libraries WHERE digest = ?", (digest,))
            self._db.execute("DELETE FROM resolutions WHERE platform_digest = ?", (digest,))
            self._libraries.pop(digest, None)
            self._resolutions = {k: v for k, v in self._resolutions.items() if v != digest}

    def mark_unused(self, digest: str, since: float | None) -> None:
        with self._write():
            self._set_unused(digest, since)

    def _set_unused(self, digest: str, since: float | None) -> None:
        library = self._libraries.get(digest)
        if library is None or library.unused_since == since:
            return
        self._db.execute("UPDATE libraries SET unused_since = ? WHERE digest = ?", (since, digest))
        self._libraries[digest] = replace(library, unused_since=since)

    def link_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(link.digest for link in self._links.values())

    # -------------------------------------------------------------- links

    def link(self, link: Link) -> None:
        """Record that ``link.target_path`` mounts ``link.digest`` (replacing
        whatever that target was recorded with)."""
        with self._write():
            previous = self._links.get(link.target_path)
            self._db.execute("INSERT OR REPLACE INTO links VALUES (?, ?, ?)",
                             (link.target_path, link.volume_id, link.digest))
            self._set_unused(link.digest, None)
            self._links[link.target_path] = link
            if previous is not None and previous.digest != link.digest:
                self._unused_if_unlinked(previous.digest)

    def unlink(self, target_path: str) -> Link | None:
        """Forget what ``target_path`` mounts; the library it used starts its
        cleanup delay if nothing else uses it."""
        if target_path not in self._links:  # read without the lock: the common case is a miss
            return None
        with self._write():
            link = self._links.get(target_path)
            if link is None:
                return None
            self._db.execute("DELETE FROM links WHERE target_path = ?", (target_path,))
            del self._links[target_path]
            self._unused_if_unlinked(link.digest)
            return link

    def _unused_if_unlinked(self, digest: str) -> None:
        if not any(other.digest == digest for other in self._links.values()):
            self._set_unused(digest, self._clock())

    # --------------------------------------------------------- resolution

    def tag(self, reference: str) -> str | None:
        """The digest ``reference`` (registry/repository:tag) resolved to within the last hour."""
        found = self._tags.get(reference)
        if found is None or self._clock() - found[1] >= TAG_TTL:
            return None
        return found[0]

    def remember_tag(self, reference: str, digest: str) -> None:
        now = self._clock()
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (reference, digest, now))
            self._tags[reference] = (digest, now)

    def forget_expired_tags(self) -> None:
        oldest = self._clock() - TAG_TTL
        if all(resolved_at >= oldest for _digest, resolved_at in list(self._tags.values())):
            return
        with self._write():
            self._db.execute("DELETE FROM tags WHERE resolved_at < ?", (oldest,))
            self._tags = {k: v for k, v in self._tags.items() if v[1] >= oldest}

    def platform_digest(self, digest: str) -> str | None:
        """This platform's manifest digest for image index ``digest``, if known."""
        return self._resolutions.get(digest)

    def remember_platform_digest(self, digest: str, platform_digest: str) -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO resolutions VALUES (?, ?)",
                             (digest, platform_digest))
            self._resolutions[digest] = platform_digest


def _connect(path: str) -> sqlite3.Connection:
    """Open (creating) the database; one that cannot be read is set aside and
    replaced by an empty one, with a log line saying where it went."""
    try:
        return _open(path)
    except sqlite3.DatabaseError as err:
        aside = f"{path}.unreadable-{int(time.time())}"
        log.warning("the library database cannot be read; starting an empty one (links are "
                    "rebuilt from the mounted volumes)",
                    extra={"path": path, "moved_to": aside, "error": str(err)})
        for suffix in ("", "-wal", "-shm"):
            if os.path.lexists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        return _open(path)


def _open(path: str) -> sqlite3.Connection:
    # One connection shared by the call threads and the cleanup thread,
    # serialized by LinksDatabase._lock; "with connection" is a transaction.
    db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL survives a crash of the process; a power
        # loss may lose the last writes, and takes the mounts they describe.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("SELECT count(*) FROM libraries").fetchone()
    except BaseException:
        db.close()
        raise
    os.chmod(path, 0o600)
    return db
