"""Run records in the artifact store, the same for every flow: what a run asked for, which
items of work it has, how it ended.

A run's manifest is ``{run_id, flow, config, items}``; each item is a piece of the run's work
(an evaluation unit, a dataset shard, a training stage) with a key, a label for people, the
store key of the artifact whose existence means the item is complete, and the flow's own
fields.  The status holds the run's state, its Prefect flow-run ids and the failed items with
their errors; the results hold the run's table.  Completeness is always read from the store
itself, so a run killed before it wrote its status still reports the truth, and `codealign
runs` reads every flow's runs the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef, utc_now
from codealign.tasks.artifacts.store import (
    ArtifactRef,
    ArtifactStore,
    IntegrityError,
    MissingArtifact,
)


@dataclass(frozen=True)
class RunItem:
    """One item of a run's work."""

    key: str
    label: str
    done: str  # store key of the artifact that completes the item
    data: dict[str, Any] = field(default_factory=dict)  # the flow's own fields


@dataclass(frozen=True)
class Manifest:
    run_id: str
    flow: str
    config: dict[str, Any]
    items: list[RunItem]
    deployment: str | None = None  # the Prefect deployment ("flow/name") that started the run


@dataclass
class RunStatus:
    run_id: str
    state: str  # running | completed | failed
    flow_run_ids: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # item key -> error
    bad_inputs: dict[str, str] = field(default_factory=dict)  # input URI -> error (before any item existed)
    updated_at: str = ""
    started_at: str = ""  # the first attempt's start (a resume keeps it); "" in records from before it


@dataclass
class RunSummary:
    """A run as `codealign runs` shows it."""

    run_id: str
    flow: str
    state: str
    items: int
    complete: int
    failed: list[str]
    updated_at: str
    started_at: str = ""
    parent: str | None = None  # the sweep whose sub-run this is
    children: list[RunSummary] = field(default_factory=list)
    deployment: str | None = None  # the Prefect deployment that started it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_manifest(store: ArtifactStore, manifest: Manifest, inputs: tuple[InputRef, ...],
                   producer: dict[str, Any]) -> ArtifactRef:
    """The run's manifest; a flow's producer names the deployment that started the run, if one did
    (flows/runtime.open_run), and the manifest records it."""
    record = {**asdict(manifest), "deployment": manifest.deployment or producer.get("deployment")}
    return store.put_json(layout.run_record(manifest.run_id, layout.MANIFEST), record,
                          ArtifactMeta("run-manifest", producer, inputs))


def read_manifest(store: ArtifactStore, run_id: str) -> Manifest:
    try:
        raw = store.get_json(layout.run_record(run_id, layout.MANIFEST))
    except MissingArtifact:
        raise MissingArtifact(f"no run {run_id!r} in {store.root} "
                              f"(see `codealign runs --store {store.root}`)") from None
    return _manifest(raw)


def _manifest(raw: dict[str, Any]) -> Manifest:
    return Manifest(raw["run_id"], raw["flow"], raw["config"], [RunItem(**i) for i in raw["items"]],
                    raw.get("deployment"))


def started_by(store: ArtifactStore, run_id: str) -> str | None:
    """The deployment the run's manifest records as its starter (None: none, or no manifest yet)."""
    try:
        return store.get_json(layout.run_record(run_id, layout.MANIFEST)).get("deployment")
    except (MissingArtifact, IntegrityError):
        return None


def write_status(store: ArtifactStore, status: RunStatus, producer: dict[str, Any]) -> None:
    status.updated_at = utc_now()
    store.put_json(layout.run_record(status.run_id, layout.STATUS), asdict(status),
                   ArtifactMeta("run-status", producer))


def read_status(store: ArtifactStore, run_id: str) -> RunStatus | None:
    """The run's last recorded status; None if there is none or it cannot be trusted (a writer
    killed between content and sidecar): completeness is read from the items anyway."""
    try:
        return RunStatus(**store.get_json(layout.run_record(run_id, layout.STATUS)))
    except (MissingArtifact, IntegrityError):
        return None


def write_results(store: ArtifactStore, run_id: str, rows: list[dict[str, Any]], inputs: tuple[InputRef, ...],
                  producer: dict[str, Any]) -> ArtifactRef:
    """The run's table; its lineage inputs are the artifacts the rows were read from."""
    return store.put_json(layout.run_record(run_id, layout.RESULTS), {"run_id": run_id, "rows": rows},
                          ArtifactMeta("run-results", producer, inputs))


def read_results(store: ArtifactStore, run_id: str) -> list[dict[str, Any]]:
    return store.get_json(layout.run_record(run_id, layout.RESULTS))["rows"]


def is_complete(store: ArtifactStore, item: RunItem) -> bool:
    return store.exists(item.done)


def summarize(store: ArtifactStore, run_id: str, existing: set[str] | None = None) -> RunSummary:
    """The run as it stands; ``existing`` (every complete artifact key under ``runs/`` and
    ``units/``, listed once) spares one existence check per item when many runs are summarized."""
    return _summary(store, read_manifest(store, run_id), read_status(store, run_id), existing)


def _summary(store: ArtifactStore, manifest: Manifest, status: RunStatus | None,
             existing: set[str] | None) -> RunSummary:
    run_id = manifest.run_id
    done = {i.key for i in manifest.items if (i.done in existing if existing is not None else is_complete(store, i))}
    failed = [f"{i.label} ({i.key}): {status.failed[i.key]}" for i in manifest.items
              if status and i.key in status.failed and i.key not in done]
    if status:
        failed += [f"{uri}: {err}" for uri, err in status.bad_inputs.items()]
    state = status.state if status else "unknown"
    if state == "running" and len(done) == len(manifest.items) and manifest.items:
        state = "completed"
    started = status.started_at if status and status.started_at else \
        store.meta(layout.run_record(run_id, layout.MANIFEST)).created_at  # records from before started_at
    return RunSummary(run_id, manifest.flow, state, len(manifest.items), len(done), failed,
                      status.updated_at if status else "", started, deployment=manifest.deployment)


def list_runs(store: ArtifactStore, flow: str | None = None, states: set[str] | None = None,
              since: str | None = None, limit: int | None = None) -> list[RunSummary]:
    """The store's runs, newest start first, each sweep's sub-runs under it (``children``), of
    ``flow`` and in ``states`` only, started at ``since`` (ISO time) or later, the newest ``limit``.

    Why it stays fast on thousands of runs: the store is listed twice in all (``runs/`` and
    ``units/``, one recursive listing each) and an item's completeness is a lookup in those
    listings, not one existence check per item; every run's manifest and status are read in one
    batch (:meth:`ArtifactStore.get_many`: concurrent requests on S3)."""
    keys = store.list(layout.RUNS)
    existing = set(keys) | set(store.list(layout.UNITS))
    ids = sorted(filter(None, map(layout.run_id_of, keys)))
    records = store.get_many([layout.run_record(i, name) for i in ids for name in (layout.MANIFEST, layout.STATUS)])
    summaries = {}
    for run_id in ids:
        manifest, status = (records[layout.run_record(run_id, name)] for name in (layout.MANIFEST, layout.STATUS))
        try:
            if isinstance(manifest, Exception):
                raise manifest
            summaries[run_id] = _summary(store, _manifest(json.loads(manifest)),
                                         None if isinstance(status, Exception) else RunStatus(**json.loads(status)),
                                         existing)
        except (IntegrityError, MissingArtifact, KeyError, TypeError, ValueError) as exc:
            # one damaged run must not hide the others
            summaries[run_id] = RunSummary(run_id, "?", "unreadable", 0, 0, [f"{type(exc).__name__}: {exc}"], "")
    for parent in [s for s in summaries.values() if s.flow == "alignment-sweep"]:
        for child in sweep_children(store, parent.run_id, existing):
            if child in summaries:
                summaries[child].parent = parent.run_id
                parent.children.append(summaries[child])
    for s in summaries.values():
        s.children.sort(key=lambda c: c.started_at)

    def wanted(s: RunSummary) -> bool:
        return ((flow is None or s.flow == flow) and (states is None or s.state in states)
                and (since is None or s.started_at >= since))

    # a sub-run shows under its sweep; one that matches alone (a filter on its flow) shows by itself
    shown = [s for s in summaries.values() if wanted(s) and (s.parent is None or not wanted(summaries[s.parent]))]
    shown.sort(key=lambda s: s.started_at, reverse=True)
    return shown[:limit] if limit else shown


def sweep_children(store: ArtifactStore, run_id: str, existing: set[str]) -> list[str]:
    """The sub-runs a sweep's record names (data, training and evaluation runs)."""
    key = layout.run_record(run_id, layout.SWEEP_RECORD)
    if key not in existing:
        return []
    record = store.get_json(key)
    evals = [sub for subs in record.get("eval_runs", {}).values()
             for sub in ([subs] if isinstance(subs, str) else subs)]  # one id per shot count before per-branch evals
    return [*record.get("data_runs", {}).values(), *(s["run_id"] for s in record.get("stages", [])), *evals]


def lineage_roots(store: ArtifactStore, uri: str, limit: int = 20) -> list[dict[str, str]]:
    """The first ``limit`` roots of an artifact's lineage (what nothing in the store produced:
    checkpoints, data files, external inputs), breadth first, each once."""
    seen, roots, queue = {uri}, [], [uri]
    while queue and len(roots) < limit:
        current = queue.pop(0)
        try:
            inputs = store.meta(current).inputs
        except (FileNotFoundError, ValueError):
            inputs = ()
        if not inputs and current != uri:
            roots.append({"uri": current})
        for ref in inputs:
            if ref.uri not in seen:
                seen.add(ref.uri)
                queue.append(ref.uri)
    return roots


def describe(store: ArtifactStore, run_id: str, log: str) -> dict[str, Any]:
    """One page about a run (`codealign show`): its flow, config, state and items, start and last
    update, its pieces and critical path (sweeps), report, sub-runs, lineage roots, log file."""
    summary = summarize(store, run_id)
    manifest = read_manifest(store, run_id)
    page: dict[str, Any] = {"run_id": run_id, "flow": manifest.flow, "deployment": manifest.deployment,
                            "state": summary.state,
                            "started_at": summary.started_at, "updated_at": summary.updated_at,
                            "items": summary.items, "complete": summary.complete, "failed": summary.failed,
                            "config": manifest.config, "log": log}
    sweep = layout.run_record(run_id, layout.SWEEP_RECORD)
    if store.exists(sweep):
        record = store.get_json(sweep)
        page["pieces"] = record.get("pieces", [])
        page["critical_path"] = record.get("critical_path")
        page["sub_runs"] = sweep_children(store, run_id, {sweep})
    report = layout.run_record(run_id, "report/report.md")
    page["report"] = store.uri(report) if store.exists(report) else None
    results = layout.run_record(run_id, layout.RESULTS)
    page["lineage_roots"] = lineage_roots(store, store.uri(results)) if store.exists(results) else []
    return page
