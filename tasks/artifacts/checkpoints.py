"""Checkpoints as evaluation inputs: discover them, fingerprint them, check them, fetch them.

A training run leaves ``checkpoint-<step>`` directories (the Hugging Face Trainer layout).
Evaluation units are keyed by a checkpoint's *content* hash, not its path: a checkpoint that
is rewritten (fixed after corruption, retrained) is a new input, and one that is only moved
is not.  Checkpoints may live on any fsspec filesystem (local, ``s3://``); vLLM needs a local
directory, so remote ones are copied into a verified, size-capped cache
(:mod:`codealign.tasks.artifacts.checkpoint_cache`).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import fsspec

from codealign.tasks.artifacts.hash_memo import HashMemo, version_of
from codealign.tasks.artifacts.store import storage_options, to_uri
from codealign.tasks.errors import CodealignError

_STEP = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(CodealignError, ValueError):
    """A checkpoint that cannot be evaluated (missing, unreadable or corrupt); names the file."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint, identified by its content."""

    uri: str
    name: str
    step: int | None
    sha256: str


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri, **storage_options(uri))


def _is_checkpoint(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    return fs.exists(f"{path}/config.json")


def discover(sources: list[str]) -> list[str]:
    """Checkpoint URIs from ``sources``: each is a checkpoint directory itself, or a training
    output directory whose ``checkpoint-<step>`` subdirectories are taken in step order.
    Sources that do not exist are an error; a directory with neither is an error too."""
    found: list[str] = []
    for source in sources:
        uri = to_uri(source)
        fs, path = _fs(uri)
        if not fs.exists(path):
            raise CheckpointError(f"{source}: no such checkpoint or directory")
        if _is_checkpoint(fs, path) or _STEP.match(path.rstrip("/").rsplit("/", 1)[-1]):
            found.append(uri)
            continue
        steps = []
        for entry in fs.ls(path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            match = _STEP.match(name)
            if match and fs.isdir(entry):
                steps.append((int(match.group(1)), f"{uri}/{name}"))
        if not steps:
            raise CheckpointError(f"{source}: neither a checkpoint (no config.json) "
                                  "nor a directory of checkpoint-<step>")
        found += [u for _, u in sorted(steps)]
    return list(dict.fromkeys(found))


_SKIP = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}


def listing(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, dict[str, Any]]:
    """The checkpoint's files, relative path -> fsspec info, from one listing.  Optimizer and
    scheduler state are excluded: they do not change what the model generates (so they are not
    part of its identity, and vLLM does not need them), and they are most of a full checkpoint's
    bytes."""
    base = path.rstrip("/")
    out = {}
    for full, info in fs.find(path, detail=True).items():
        rel = full[len(base) + 1:] if full.startswith(base) else full.rsplit("/", 1)[-1]
        if rel.rsplit("/", 1)[-1] not in _SKIP and not rel.startswith(("global_step", "rng_state")):
            out[rel] = info
    return dict(sorted(out.items()))


def hash_file(fs: fsspec.AbstractFileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(uri: str, memo: HashMemo | None = None) -> dict[str, str]:
    """sha256 of each of the checkpoint's files (relative path -> hex).  Files unchanged since
    they were last hashed on this machine (same size and mtime/inode locally, same ETag or
    version on S3) are not read again."""
    uri = to_uri(uri)
    fs, path = _fs(uri)
    memo = memo or HashMemo()
    digests = {}
    for rel, info in listing(fs, path).items():
        location, size, version = f"{uri}/{rel}", int(info.get("size") or 0), version_of(info)
        digest = memo.get(location, size, version)
        if digest is None:
            digest = hash_file(fs, f"{path.rstrip('/')}/{rel}")
            memo.put(location, size, version, digest)
        digests[rel] = digest
    return digests


def combined_digest(digests: dict[str, str]) -> str:
    """A checkpoint's content hash from its files' (names and contents)."""
    digest = hashlib.sha256()
    for rel in sorted(digests):
        digest.update(f"{rel}\0{digests[rel]}\n".encode())
    return digest.hexdigest()


def fingerprint(uri: str) -> Checkpoint:
    """Hash the checkpoint's files (names and contents).  A corrupt checkpoint still has a hash:
    its units exist and fail (see :func:`validate`); once it is fixed, its hash and units change."""
    uri = to_uri(uri)
    fs, path = _fs(uri)
    name = uri.rsplit("/", 1)[-1]
    match = _STEP.match(name)
    if not _is_checkpoint(fs, path):
        raise CheckpointError(f"{uri}: no config.json; not a model checkpoint")
    return Checkpoint(uri, name, int(match.group(1)) if match else None, combined_digest(file_digests(uri)))


def validate(uri: str) -> None:
    """Cheap structural checks, so a corrupt checkpoint fails with its file named before any
    engine starts: config.json parses, and every safetensors file has a well-formed header
    whose tensors end exactly at the end of the file (catches truncation and overwrites)."""
    fs, path = _fs(to_uri(uri))
    try:
        json.loads(fs.cat_file(f"{path}/config.json"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{uri}/config.json: not valid JSON ({exc})") from None
    entries = fs.ls(path, detail=False)
    weights = [p for p in entries if p.endswith(".safetensors")]
    bins = [p for p in entries if p.endswith(".bin") and "training_args" not in p]
    if not weights and not bins:
        raise CheckpointError(f"{uri}: no model weights (*.safetensors or *.bin)")
    for weight in weights:
        _check_safetensors(fs, weight, f"{uri}/{weight.rsplit('/', 1)[-1]}")


def _check_safetensors(fs: fsspec.AbstractFileSystem, path: str, label: str) -> None:
    size = fs.size(path)
    with fs.open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{label}: truncated ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise CheckpointError(f"{label}: corrupt header (claims {n} header bytes in a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(f"{label}: corrupt header (not JSON)") from None
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        raise CheckpointError(f"{label}: corrupt header (not a safetensors tensor table)") from None
    if 8 + n + max(ends, default=0) != size:
        raise CheckpointError(f"{label}: size {size} does not match its header ({8 + n + max(ends, default=0)} bytes)"
                              " - truncated or overwritten")
