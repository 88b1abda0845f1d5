"""A memo of file hashes keyed by what says a file is unchanged, so re-fingerprinting an
unchanged checkpoint reads no bytes.

Local files are keyed by (path, size, mtime, inode): a rewrite changes the mtime or, written
by rename as trainers and our store do, the inode.  Objects on S3 are keyed by (URI, size,
VersionId or ETag): S3 gives every new write a new ETag.  The memo is one SQLite file in the
cache directory (per machine; safe for concurrent processes), and a missing or unreadable memo
only costs re-hashing.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from codealign.tasks.files import cache_dir

_PRUNE_AFTER_S = 30 * 86400  # rows not used for a month go (paths of deleted temporary dirs)


def version_of(info: dict[str, Any]) -> str | None:
    """What identifies one version of a file, from an fsspec ``info`` entry (None: unknown,
    so never memoised)."""
    if info.get("VersionId"):
        return f"version:{info['VersionId']}"
    if info.get("ETag"):
        return f"etag:{info['ETag'].strip(chr(34))}"
    if info.get("mtime") is not None:
        return f"mtime:{info['mtime']!r}:ino:{info.get('ino')}"
    return None


class HashMemo:
    """``sha256`` of files by (location, size, version)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "file-hashes.sqlite"
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS hashes (location TEXT PRIMARY KEY, size INTEGER, "
                           "version TEXT, sha256 TEXT, used REAL)")
                db.execute("DELETE FROM hashes WHERE used < ?", (time.time() - _PRUNE_AFTER_S,))
            except sqlite3.Error:
                return None  # no memo: every fingerprint hashes
            self._db = db
        return self._db

    def get(self, location: str, size: int, version: str | None) -> str | None:
        db = self._conn()
        if db is None or version is None:
            return None
        try:
            row = db.execute("SELECT size, version, sha256 FROM hashes WHERE location = ?", (location,)).fetchone()
            if row is None or row[0] != size or row[1] != version:
                return None
            db.execute("UPDATE hashes SET used = ? WHERE location = ?", (time.time(), location))
        except sqlite3.Error:
            return None
        return row[2]

    def put(self, location: str, size: int, version: str | None, sha256: str) -> None:
        db = self._conn()
        if db is None or version is None:
            return
        try:
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", (location, size, version, sha256,
                                                                              time.time()))
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
