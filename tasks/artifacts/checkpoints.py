"""Checkpoints as evaluation inputs: discover them, fingerprint them, check them, fetch them.

A training run leaves ``checkpoint-<step>`` directories (the Hugging Face Trainer layout).
Evaluation units are keyed by a checkpoint's *content* hash, not its path: a checkpoint that
is rewritten (fixed after corruption, retrained) is a new input, and one that is only moved
is not.  Checkpoints may live on any fsspec filesystem (local, ``s3://``); vLLM needs a local
directory, so remote ones are copied once into a cache keyed by their hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass

import fsspec

from tasks.artifacts.store import local_path, storage_options, to_uri
from tasks.files import atomic_directory, cache_dir

_STEP = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
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
            raise CheckpointError(f"{source}: neither a checkpoint (no config.json) nor a directory of checkpoint-<step>")
        found += [u for _, u in sorted(steps)]
    return list(dict.fromkeys(found))


def _files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Relative paths of the checkpoint's files (optimizer/scheduler state excluded: it does not
    change what the model generates, and it is most of a full checkpoint's bytes)."""
    skip = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}
    out = []
    for full in fs.find(path):
        rel = full[len(path.rstrip("/")) + 1:] if full.startswith(path.rstrip("/")) else full.rsplit("/", 1)[-1]
        if rel.rsplit("/", 1)[-1] not in skip and not rel.startswith("global_step") and not rel.startswith("rng_state"):
            out.append(rel)
    return sorted(out)


def fingerprint(uri: str) -> Checkpoint:
    """Hash the checkpoint's files (names and contents).  A corrupt checkpoint still has a hash:
    its units exist and fail (see :func:`validate`); once it is fixed, its hash and units change."""
    uri = to_uri(uri)
    fs, path = _fs(uri)
    name = uri.rsplit("/", 1)[-1]
    match = _STEP.match(name)
    if not _is_checkpoint(fs, path):
        raise CheckpointError(f"{uri}: no config.json; not a model checkpoint")
    digest = hashlib.sha256()
    for rel in _files(fs, path):
        h = hashlib.sha256()
        with fs.open(f"{path}/{rel}", "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest.update(f"{rel}\0{h.hexdigest()}\n".encode())
    return Checkpoint(uri, name, int(match.group(1)) if match else None, digest.hexdigest())


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


def local_copy(checkpoint: Checkpoint) -> str:
    """A local directory with the checkpoint's files (remote ones are downloaded once, into a
    cache keyed by content hash)."""
    if (path := local_path(checkpoint.uri)) is not None:
        return path
    target = cache_dir() / "checkpoints" / checkpoint.sha256[:24]
    if not (target / ".complete").exists():
        fs, path = _fs(checkpoint.uri)
        with atomic_directory(target) as tmp:
            fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
            (tmp / ".complete").touch()
    return str(target)
