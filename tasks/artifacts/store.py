"""Artifact store over fsspec: a local directory by default, ``s3://bucket/prefix`` via s3fs.

Every artifact is two objects: its content and a ``<name>.meta.json`` sidecar holding its
sha256, size and lineage (:class:`~codealign.tasks.artifacts.lineage.ArtifactMeta`).  The content is written
first, atomically (local: temporary name then rename; S3: a single PUT, which is all or
nothing), and the sidecar last, so an artifact without a sidecar is incomplete and is treated
as absent.  Reads verify the sha256; a mismatch raises :class:`IntegrityError` naming the
artifact.  S3 endpoint and credentials come from the standard AWS environment/config
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), so MinIO, Ceph and AWS all work.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import fsspec

from codealign.tasks.artifacts.lineage import ArtifactMeta
from codealign.tasks.errors import CodealignError
from codealign.tasks.files import (
    atomic_directory,
    jsonl_text,
    keep_from_samples,
    write_bytes_atomic,
)

META_SUFFIX = ".meta.json"


class IntegrityError(CodealignError, RuntimeError):
    """A stored artifact does not match the sha256 recorded when it was written."""


class MissingArtifact(CodealignError, FileNotFoundError):
    """No complete artifact at this URI."""


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size: int


def storage_options(url: str) -> dict[str, Any]:
    if url.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def to_uri(location: str) -> str:
    """A URL for ``location``: URLs as given (no trailing slash), local paths as absolute
    ``file://`` URLs, so that any process on any node means the same place."""
    return location.rstrip("/") if "://" in location else "file://" + os.path.abspath(location)


def local_path(uri: str) -> str | None:
    """The local filesystem path of a ``file://`` URI (None for remote URIs)."""
    return uri[len("file://"):] if uri.startswith("file://") else None


class ArtifactStore:
    """Content + verified sidecar artifacts under one root URL."""

    def __init__(self, root: str, create: bool = True):
        """``create=False`` opens a store only to read it (``sweep --plan``): a local root that
        does not exist is left uncreated and reads as empty."""
        self.root = to_uri(root)
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **storage_options(self.root))
        if self.is_local and create:
            self.fs.makedirs(self._root_path, exist_ok=True)
            keep_from_samples(self._root_path)

    @property
    def is_local(self) -> bool:
        return self.root.startswith("file://")

    def uri(self, key: str) -> str:
        return f"{self.root}/{key.lstrip('/')}"

    def path(self, uri_or_key: str) -> str:
        """Where an artifact's content lives on the store's filesystem (``self.fs``): for tools
        and tests that must look behind the store's back; everything else uses get/put."""
        if "://" in uri_or_key:
            if not uri_or_key.startswith(self.root + "/"):
                raise ValueError(f"{uri_or_key} is not in the store {self.root}")
            uri_or_key = uri_or_key[len(self.root) + 1:]
        return f"{self._root_path}/{uri_or_key}"

    def _write_atomic(self, path: str, data: bytes) -> None:
        if self.is_local:
            write_bytes_atomic(path, data)
        else:
            self.fs.pipe_file(path, data)  # one PUT: the object appears complete or not at all

    def put(self, key: str, data: bytes, meta: ArtifactMeta) -> ArtifactRef:
        """Store ``data`` under ``key`` with its lineage; returns its URI and sha256."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(key)
        meta = meta.completed(uri=self.uri(key), sha256=digest, size=len(data))
        self._write_atomic(path, data)
        self._write_atomic(path + META_SUFFIX, json.dumps(meta.to_json(), indent=2).encode())
        return ArtifactRef(self.uri(key), digest, len(data))

    def put_json(self, key: str, obj: Any, meta: ArtifactMeta) -> ArtifactRef:
        return self.put(key, json.dumps(obj, indent=2, sort_keys=True).encode(), meta)

    def put_jsonl(self, key: str, records: list[dict[str, Any]], meta: ArtifactMeta) -> ArtifactRef:
        return self.put(key, jsonl_text(records).encode(), meta)

    def put_directory(self, key: str, local_dir: str, sha256: str, meta: ArtifactMeta) -> ArtifactRef:
        """Store a directory (a model checkpoint) under ``key``.  Its ``sha256`` is the caller's
        content hash (a checkpoint's fingerprint, the one evaluation keys on).  Locally the
        directory appears by one rename; remotely its files are uploaded first; either way the
        sidecar is written last, so a half-copied directory is absent to readers."""
        path = self.path(key)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(local_dir) for f in files)
        if self.is_local:
            with atomic_directory(path) as tmp:
                shutil.copytree(local_dir, tmp, dirs_exist_ok=True)
        else:
            self.fs.put(local_dir.rstrip("/") + "/", path, recursive=True)
        meta = meta.completed(uri=self.uri(key), sha256=sha256, size=size)
        self._write_atomic(path + META_SUFFIX, json.dumps(meta.to_json(), indent=2).encode())
        return ArtifactRef(self.uri(key), sha256, size)

    # Small control objects (leases) beside the artifacts: no sidecar, no lineage.

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if nothing is there; False if something is.  Atomic on
        a local filesystem (link) and on S3 (a conditional PUT, which AWS S3, MinIO and
        Ceph honour)."""
        path = self.path(key)
        if self.is_local:
            # Written whole under a temporary name, then hard-linked into place: link() fails if
            # the name exists, and a reader never sees the object empty or half-written.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".excl-", dir=os.path.dirname(path))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def read_object(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None

    def write_object(self, key: str, data: bytes) -> None:
        self._write_atomic(self.path(key), data)

    def delete_object(self, key: str) -> None:
        try:
            self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            pass

    def ref_if_exists(self, key: str) -> ArtifactRef | None:
        """The complete artifact at ``key`` (its recorded sha256 and size), or None: how a stage
        that may have run before finds its output."""
        if not self.exists(key):
            return None
        meta = self.meta(key)
        return ArtifactRef(meta.uri, meta.sha256, meta.size)

    def exists(self, key: str) -> bool:
        """True only for complete artifacts (content and sidecar)."""
        path = self.path(key)
        return self.fs.exists(path + META_SUFFIX) and self.fs.exists(path)

    def meta(self, key: str) -> ArtifactMeta:
        path = self.path(key)
        try:
            raw = self.fs.cat_file(path + META_SUFFIX)
        except FileNotFoundError:
            raise MissingArtifact(f"{self.uri(key) if '://' not in key else key}: no such artifact") from None
        return ArtifactMeta.from_json(json.loads(raw))

    def get(self, key: str) -> bytes:
        """The artifact's bytes, verified against its recorded sha256."""
        meta = self.meta(key)
        try:
            data = self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise MissingArtifact(f"{meta.uri}: content missing (sidecar present)") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.sha256:
            raise IntegrityError(
                f"{meta.uri}: content sha256 {digest[:16]}… does not match the recorded {meta.sha256[:16]}…; "
                f"the artifact was modified after it was written"
            )
        return data

    def get_many(self, keys: list[str]) -> dict[str, bytes | CodealignError]:
        """Several artifacts' bytes, each verified as :meth:`get` does; a missing or damaged one
        maps to its :class:`MissingArtifact` or :class:`IntegrityError`.  Contents and sidecars
        are fetched as one batch (:meth:`read_objects`): how `codealign runs` reads the records of
        thousands of runs."""
        raw = self.read_objects([k for key in keys for k in (key, key + META_SUFFIX)])
        out: dict[str, bytes | CodealignError] = {}
        for key in keys:
            data, sidecar = raw[key], raw[key + META_SUFFIX]
            if sidecar is None or data is None:
                out[key] = MissingArtifact(f"{self.uri(key)}: no such artifact")
                continue
            recorded = ArtifactMeta.from_json(json.loads(sidecar)).sha256
            digest = hashlib.sha256(data).hexdigest()
            out[key] = data if digest == recorded else IntegrityError(
                f"{self.uri(key)}: content sha256 {digest[:16]}… does not match the recorded {recorded[:16]}…")
        return out

    def read_objects(self, keys: list[str]) -> dict[str, bytes | None]:
        """Raw objects (no sidecar, no check), None where absent, fetched as one batch: fsspec's
        ``cat`` of a list, concurrent requests on S3, where reads one after another cost a round
        trip each."""
        if not keys:
            return {}
        norm = self.fs._strip_protocol
        raw = {norm(p): v for p, v in self.fs.cat([self.path(k) for k in keys], on_error="return").items()}
        return {k: v if isinstance(v := raw.get(norm(self.path(k))), bytes) else None for k in keys}

    def objects(self) -> dict[str, dict[str, Any]]:
        """Every object under the root by key — artifacts, sidecars, leases, Ray Train state,
        Prefect results — with fsspec's details (``size``, modification time): one recursive
        listing (paged LISTs on S3).  For gc, which must see what has no sidecar too."""
        root = self._root_path.strip("/") + "/"
        try:
            found = self.fs.find(self._root_path, detail=True)
        except FileNotFoundError:
            return {}
        return {p[len(root):]: info for path, info in found.items() if (p := path.lstrip("/")).startswith(root)}

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def get_jsonl(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.get(key).decode().splitlines() if line.strip()]

    def list(self, prefix: str) -> list[str]:
        """Keys of complete artifacts under ``prefix``."""
        base = self.path(prefix).rstrip("/")
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        # fsspec may drop a local path's leading "/": compare without it.
        root = self._root_path.strip("/") + "/"
        keys = []
        for path in (p.lstrip("/") for p in found):
            if path.endswith(META_SUFFIX) and path.startswith(root):
                keys.append(path[len(root): -len(META_SUFFIX)])
        return sorted(keys)
