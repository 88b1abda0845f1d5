"""Local copies of remote checkpoints, for vLLM: verified, only what it needs, size-capped.

vLLM loads a model from a local directory, so a checkpoint in S3 is copied to
``<cache>/checkpoints/<sha>/`` first.  The copy

* holds only the checkpoint's model files (:func:`~codealign.tasks.artifacts.checkpoints.listing`: no
  optimizer, scheduler or RNG state);
* is verified: every copied file is hashed and compared with the hash the checkpoint was
  fingerprinted with, so a checkpoint rewritten since, or a bad transfer, is an error naming the
  file, never a silently different model under an old key.  A cached copy is checked again on
  every use (cheaply: through the hash memo, only files whose size/mtime changed are re-read)
  and a damaged one is fetched again;
* is evicted least-recently-used once the cache exceeds ``CODEALIGN_CACHE_MAX_GB``
  (default 50).  "Used" is the mtime of the copy's ``<sha>.complete`` record, touched on each
  use.

Local checkpoints are used in place.  Concurrent processes on one machine coordinate through
file locks (one per copy, one for eviction); a copy another process is loading at that very
moment can be evicted (vLLM has read the weights by the time it serves), so keep the cap above
what the engines of one node load at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec

from codealign.tasks.artifacts.checkpoints import (
    Checkpoint,
    CheckpointError,
    combined_digest,
    file_digests,
)
from codealign.tasks.artifacts.hash_memo import HashMemo, version_of
from codealign.tasks.artifacts.store import local_path, storage_options, to_uri
from codealign.tasks.files import atomic_directory, cache_dir

DEFAULT_MAX_GB = 50.0
MARKER = ".complete"
log = logging.getLogger(__name__)


def cache_root() -> Path:
    return cache_dir() / "checkpoints"


def cache_limit_bytes() -> int:
    """``CODEALIGN_CACHE_MAX_GB`` (GiB, may be fractional) in bytes; a bad value is an error naming it."""
    raw = os.environ.get("CODEALIGN_CACHE_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        raise ValueError(f"CODEALIGN_CACHE_MAX_GB={raw!r}: expected a number of GiB") from None
    if gb <= 0:
        raise ValueError(f"CODEALIGN_CACHE_MAX_GB={raw!r}: must be positive")
    return int(gb * (1 << 30))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker(target: Path) -> Path:
    return target.with_name(target.name + MARKER)


def _download(fs: fsspec.AbstractFileSystem, source: str, dest: Path) -> None:
    fs.get_file(source, str(dest))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_intact(target: Path, checkpoint: Checkpoint) -> bool:
    """The cached copy exists and still has the checkpoint's content (files whose size and
    mtime are unchanged since they were verified are not re-read)."""
    if not _marker(target).exists() or not target.is_dir():
        return False
    try:
        return combined_digest(file_digests(str(target))) == checkpoint.sha256
    except OSError:
        return False


def _fetch(checkpoint: Checkpoint, target: Path) -> int:
    """Copy the checkpoint's model files to ``target``, each verified; returns the bytes copied."""
    uri = to_uri(checkpoint.uri)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    expected = file_digests(uri)  # memoised by ETag/version: no bytes read for an unchanged checkpoint
    if combined_digest(expected) != checkpoint.sha256:
        raise CheckpointError(f"{uri}: its files changed after it was fingerprinted ({checkpoint.sha256[:12]}); "
                              "run the evaluation again to evaluate the new content")
    size = 0
    with atomic_directory(target) as tmp:
        for rel, digest in expected.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download(fs, f"{path.rstrip('/')}/{rel}", dest)
            got = _sha256(dest)
            if got != digest:
                raise CheckpointError(f"{uri}/{rel}: the copied file's sha256 {got[:16]}… does not match the "
                                      f"fingerprinted {digest[:16]}… (changed during the copy, or a bad transfer)")
            size += dest.stat().st_size
    memo, local = HashMemo(), fsspec.filesystem("file")
    for rel, digest in expected.items():  # the copy is verified: the next use re-reads nothing
        memo.put(f"file://{target}/{rel}", (target / rel).stat().st_size, version_of(local.info(str(target / rel))),
                 digest)
    memo.close()
    return size


def local_copy(checkpoint: Checkpoint) -> str:
    """A local directory with the checkpoint's model files: the checkpoint itself when it is
    local, else its verified copy in the cache (fetched if missing or damaged)."""
    if (path := local_path(checkpoint.uri)) is not None:
        return path
    limit = cache_limit_bytes()  # a bad setting fails before anything is fetched
    root = cache_root()
    target = root / checkpoint.sha256[:24]
    with _locked(root / f".{target.name}.lock"):
        if not _is_intact(target, checkpoint):
            if _marker(target).exists():
                log.warning("cached copy %s of %s is damaged; fetching it again", target, checkpoint.uri)
                _marker(target).unlink()
            size = _fetch(checkpoint, target)
            _marker(target).write_text(json.dumps({"uri": checkpoint.uri, "sha256": checkpoint.sha256, "size": size}))
        os.utime(_marker(target))  # most recently used
    evict(keep=target, limit=limit)
    return str(target)


def evict(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove least-recently-used copies until the cache is within ``limit`` bytes (default
    :func:`cache_limit_bytes`); ``keep`` (the copy about to be used) is never removed.
    Returns the removed directories."""
    root, limit = cache_root(), cache_limit_bytes() if limit is None else limit
    removed: list[Path] = []
    with _locked(root / ".evict.lock"):
        entries = []
        for marker in root.glob(f"*{MARKER}"):
            try:
                size = int(json.loads(marker.read_text()).get("size", 0))
                entries.append((marker.stat().st_mtime, marker, size))
            except (OSError, ValueError):
                continue
        total = sum(size for _, _, size in entries)
        for _, marker, size in sorted(entries):
            if total <= limit:
                break
            target = marker.with_name(marker.name[: -len(MARKER)])
            if keep is not None and target == keep:
                continue
            with _locked(root / f".{target.name}.lock"):
                marker.unlink(missing_ok=True)
                shutil.rmtree(target, ignore_errors=True)
            removed.append(target)
            total -= size
        if total > limit:
            log.warning("checkpoint cache holds %.1f GiB, over CODEALIGN_CACHE_MAX_GB: the copy in use is larger "
                        "than the cap", total / (1 << 30))
    return removed
