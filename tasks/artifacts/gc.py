"""Keep the store in bounds (``codealign gc``): delete old runs and what no kept run needs.

What a kept run needs is read from the store itself, never guessed from names:
- every record under ``runs/<id>/`` (manifest, status, results, datasets, report);
- every artifact its manifest items complete (``done``), and the whole unit around it (a failed
  run to resume needs its half-made units: samples before verdicts, Ray Train's state);
- the lineage closure of all of those: each artifact's sidecar names its inputs, followed while
  they are in this store (a sweep's results reach its sub-runs' results, their scores, verdicts,
  samples, the checkpoints they were sampled from, the datasets those were trained on).  A
  training stage's record lists every checkpoint the stage saved; it keeps only the last — the
  others are kept when a kept evaluation or a later stage reached them on its own.
A run whose record another kept run needs is kept whole (a dataset's run, a sweep's sub-runs).

What goes:
- **runs** outside the policy: beyond the newest ``keep_last`` top-level runs and/or started
  more than ``older_than_days`` ago, never a ``keep`` run, never a running one (a sweep's
  sub-runs go and stay with their sweep);
- **units** no kept run reaches;
- **checkpoints** of kept stages that nothing kept reached, except each stage's last ("thinned":
  a ``<checkpoint>.gc.json`` tombstone with its sha256 stays, so lineage walks report it thinned
  rather than missing);
- **Ray Train state** (``units/<stage>/train-state``: optimizer, scheduler and RNG state) of
  stages that are complete: it only resumes an unfinished stage;
- **Prefect results** (``prefect-results/``) older than ``older_than_days``: they let a UI Retry
  skip the tasks that had completed; without them those tasks run again and find their units in
  the store, so nothing is recomputed;
- expired leases.

Never: anything under a live lease, a running run and what it needs.  A run whose status says
``running`` but that holds no live run lease (its process was killed) is *stale*: listed, and
deleted only with ``delete_stale``.

Order, so that an interrupted gc leaves a consistent store: a run's manifest goes first (the
run disappears from listings), a unit's sidecars before its contents (an artifact is absent the
moment its sidecar is), a thinned checkpoint's tombstone is written before anything is deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.leases import LEASE_SUFFIX, LeaseRecord
from codealign.tasks.artifacts.lineage import ArtifactMeta, utc_now
from codealign.tasks.artifacts.store import META_SUFFIX, ArtifactStore
from codealign.tasks.errors import CodealignError

TOMBSTONE_SUFFIX = layout.TOMBSTONE_SUFFIX
RUN_LEASE, STAGE_RECORD, CHECKPOINTS, TRAIN_STATE = (layout.RUN_LEASE, layout.STAGE_RECORD, layout.STAGE_CHECKPOINTS,
                                                     layout.TRAIN_STATE)


class GcError(CodealignError, ValueError):
    exit_code = 2


@dataclass(frozen=True)
class Deletion:
    """One thing gc deletes: a store key (a file, or a folder with everything under it)."""

    key: str
    what: str  # run | unit | checkpoint | train-state | prefect-results | lease
    bytes: int
    owner: str = ""  # the run or unit it belongs to


@dataclass
class GcPlan:
    kept_runs: list[str]
    deleted_runs: list[str]
    stale_runs: list[str]  # running, no live run lease
    deletions: list[Deletion] = field(default_factory=list)
    kept_bytes: int = 0

    def bytes_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.deletions:
            out[d.what] = out.get(d.what, 0) + d.bytes
        return out

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_by_kind": self.bytes_by_kind(),
                "deleted_bytes": sum(d.bytes for d in self.deletions)}


def _mtime(info: dict[str, Any]) -> float:
    when = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
    return when.timestamp() if isinstance(when, dt.datetime) else float(when)


def _unit_of(key: str) -> str | None:
    parts = key.split("/")
    return "/".join(parts[:2]) if len(parts) >= 3 and parts[0] == layout.UNITS else None


def _run_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == layout.RUNS else None


def _live_leases(store: ArtifactStore, files: dict[str, dict[str, Any]]) -> tuple[set[str], list[str]]:
    """Keys under a live lease, and the lease objects that expired."""
    live, expired, now = set(), [], time.time()
    for key, data in store.read_objects([k for k in files if k.endswith(LEASE_SUFFIX)]).items():
        try:
            record = LeaseRecord(**json.loads(data)) if data is not None else None
        except (ValueError, TypeError):
            record = None
        if record is not None and not record.expired(now) and not record.holder_gone():
            live.add(key[: -len(LEASE_SUFFIX)])
        else:
            expired.append(key)
    return live, expired


def _metas(store: ArtifactStore, keys: Iterable[str], files: dict[str, dict[str, Any]]) -> dict[str, ArtifactMeta]:
    """Sidecars of ``keys`` (those that have one), read in one batch."""
    raw = store.read_objects([k + META_SUFFIX for k in keys if k + META_SUFFIX in files])
    return {k[: -len(META_SUFFIX)]: ArtifactMeta.from_json(json.loads(v)) for k, v in raw.items() if v is not None}


def _needed(store: ArtifactStore, kept: set[str], manifests: dict[str, runs.Manifest],
            files: dict[str, dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(artifact keys, units) the ``kept`` runs need; ``kept`` grows by every run one of them
    needs a record of."""
    prefix = store.root + "/"
    needed: set[str] = set()
    frontier: set[str] = set()
    units: set[str] = set()
    done_runs: set[str] = set()

    def add_run(run_id: str) -> None:
        if run_id in done_runs:
            return
        done_runs.add(run_id)
        kept.add(run_id)
        records = [k[: -len(META_SUFFIX)] for k in files
                   if k.startswith(f"{layout.RUNS}/{run_id}/") and k.endswith(META_SUFFIX)]
        frontier.update(records)
        manifest = manifests.get(run_id)
        for item in manifest.items if manifest else []:
            frontier.add(item.done)
            if unit := _unit_of(item.done):
                units.add(unit)

    for run_id in list(kept):
        add_run(run_id)
    while frontier:
        layer = frontier - needed
        needed |= layer
        frontier = set()
        for key, meta in _metas(store, layer, files).items():
            inputs = list(meta.inputs)
            if meta.kind == "training-stage" and key.endswith("/" + STAGE_RECORD):
                inputs = inputs[-1:]  # the last checkpoint; the others only if reached on their own
            for ref in inputs:
                if ref.uri.startswith(prefix):
                    frontier.add(ref.uri[len(prefix):])
        for key in layer:
            if unit := _unit_of(key):
                units.add(unit)
            if (run_id := _run_of(key)) is not None and run_id not in done_runs and run_id in manifests:
                add_run(run_id)
    return needed, units


def _stale(summary: runs.RunSummary, live: set[str]) -> bool:
    """Running by its status, but no process holds its run lease."""
    return summary.state == "running" and layout.run_record(summary.run_id, RUN_LEASE) not in live


def plan(store: ArtifactStore, keep_last: int | None = None, older_than_days: float | None = None,
         keep: Iterable[str] = (), delete_stale: bool = False, now: dt.datetime | None = None) -> GcPlan:
    """What gc would delete, and why; deletes nothing."""
    keep = set(keep)
    if keep_last is not None and keep_last < 0:
        raise GcError(f"--keep-last {keep_last}: give 0 or more")
    now = now or dt.datetime.now(dt.UTC)
    files = store.objects()
    live, expired_leases = _live_leases(store, files)
    listed = runs.list_runs(store)
    everyone = {s.run_id: s for top in listed for s in (top, *top.children)}
    if damaged := [s for s in everyone.values() if s.state == "unreadable"]:
        raise GcError("gc cannot tell what a damaged run needs, so it deletes nothing: "
                      + "; ".join(f"run {s.run_id}: {s.failed[0]}" for s in damaged))
    if unknown := sorted(keep - set(everyone)):
        raise GcError(f"--keep-run {', '.join(unknown)}: no such run in {store.root} (see `codealign runs`)")
    manifests = {run_id: runs.read_manifest(store, run_id) for run_id in everyone}
    cutoff = (now - dt.timedelta(days=older_than_days)).isoformat() if older_than_days is not None else None
    stale = [s.run_id for s in everyone.values() if _stale(s, live)]
    dropped: set[str] = set()
    for rank, top in enumerate(listed):  # newest first
        family = [top.run_id, *(c.run_id for c in top.children)]
        if keep & set(family):
            continue
        if any(everyone[r].state == "running" and r not in stale for r in family):
            continue  # running, and alive
        if any(r in stale for r in family) and not delete_stale:
            continue
        by_policy = ((keep_last is not None or cutoff is not None)
                     and (keep_last is None or rank >= keep_last)
                     and (cutoff is None or (top.started_at or "") < cutoff))
        if by_policy or (delete_stale and any(r in stale for r in family)):
            dropped.update(family)
    kept = set(everyone) - dropped
    needed, units = _needed(store, kept, manifests, files)
    dropped -= kept  # a dropped run whose record a kept one needs stays (whole)
    units |= {u for k in live if (u := _unit_of(k))}

    sizes = {key: int(info.get("size") or 0) for key, info in files.items()}
    by_folder: dict[str, int] = {}  # runs/<id> and units/<key>: their bytes
    for key, size in sizes.items():
        if folder := _unit_of(key) or (f"{layout.RUNS}/{r}" if (r := _run_of(key)) else None):
            by_folder[folder] = by_folder.get(folder, 0) + size
    deletions = [Deletion(f"{layout.RUNS}/{r}", "run", by_folder.get(f"{layout.RUNS}/{r}", 0), r)
                 for r in sorted(dropped)]
    all_units = {u for k in files if (u := _unit_of(k))}
    deletions += [Deletion(u, "unit", by_folder.get(u, 0), u) for u in sorted(all_units - units)]
    for unit in sorted(units & all_units):
        deletions += _thin(unit, files, sizes, needed, live)
    if cutoff is not None:
        limit = dt.datetime.fromisoformat(cutoff).timestamp()
        deletions += [Deletion(k, "prefect-results", sizes[k]) for k, info in sorted(files.items())
                      if k.startswith(layout.PREFECT_RESULTS + "/") and _mtime(info) < limit]
    deletions += [Deletion(k, "lease", sizes[k]) for k in expired_leases
                  if not any(k.startswith(d.key + "/") for d in deletions)]
    gone = sum(d.bytes for d in deletions)
    return GcPlan(sorted(kept), sorted(dropped), sorted(stale), deletions, sum(sizes.values()) - gone)


def _thin(unit: str, files: dict[str, dict[str, Any]], sizes: dict[str, int], needed: set[str],
          live: set[str]) -> list[Deletion]:
    """A complete stage's checkpoints nothing kept reached (never its last), and its Ray Train
    state.  A stage still training (no record yet) or any unit under a live lease: nothing."""
    if f"{unit}/{STAGE_RECORD}{META_SUFFIX}" not in files or any(k == unit or k.startswith(unit + "/") for k in live):
        return []
    inside = {k: v for k, v in sizes.items() if k.startswith(unit + "/")}
    prefix = f"{unit}/{CHECKPOINTS}/checkpoint-"
    steps = sorted(int(k[len(prefix): -len(META_SUFFIX)]) for k in inside
                   if k.startswith(prefix) and k.endswith(META_SUFFIX) and k[len(prefix): -len(META_SUFFIX)].isdigit())
    out = [Deletion(key, "checkpoint", sum(v for k, v in inside.items() if k == key + META_SUFFIX
                                           or k.startswith(key + "/")), unit)
           for key in (f"{prefix}{step}" for step in steps[:-1]) if key not in needed]
    state = f"{unit}/{TRAIN_STATE}/"
    if state_bytes := [v for k, v in inside.items() if k.startswith(state)]:
        out.append(Deletion(state.rstrip("/"), "train-state", sum(state_bytes), unit))
    return out


def apply(store: ArtifactStore, gc_plan: GcPlan) -> None:
    """Delete what ``gc_plan`` lists, in an order that leaves a consistent store if interrupted."""
    fs = store.fs
    for d in gc_plan.deletions:
        path = store.path(d.key)
        if d.what == "run":
            manifest = store.path(layout.run_record(d.owner, layout.MANIFEST))
            for p in (manifest + META_SUFFIX, manifest):
                if fs.exists(p):
                    fs.rm(p)
        elif d.what == "checkpoint":
            meta = json.loads(fs.cat_file(path + META_SUFFIX))
            store.write_object(d.key + TOMBSTONE_SUFFIX, json.dumps(
                {"uri": meta["uri"], "sha256": meta["sha256"], "size": meta.get("size", 0), "deleted_at": utc_now(),
                 "why": "thinned by codealign gc: no kept evaluation or later stage used it"}).encode())
            fs.rm(path + META_SUFFIX)
        elif d.what == "unit":
            sidecars = [p for p in fs.find(path) if p.endswith(META_SUFFIX)]
            if sidecars:
                fs.rm(sidecars)
        if fs.exists(path):
            fs.rm(path, recursive=True)

