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


@dataclass
class RunStatus:
    run_id: str
    state: str  # running | completed | failed
    flow_run_ids: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # item key -> error
    bad_inputs: dict[str, str] = field(default_factory=dict)  # input URI -> error (before any item existed)
    updated_at: str = ""


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


def write_manifest(store: ArtifactStore, manifest: Manifest, inputs: tuple[InputRef, ...],
                   producer: dict[str, Any]) -> ArtifactRef:
    return store.put_json(layout.run_record(manifest.run_id, layout.MANIFEST), asdict(manifest),
                          ArtifactMeta("run-manifest", producer, inputs))


def read_manifest(store: ArtifactStore, run_id: str) -> Manifest:
    try:
        raw = store.get_json(layout.run_record(run_id, layout.MANIFEST))
    except MissingArtifact:
        raise MissingArtifact(f"no run {run_id!r} in {store.root} "
                              f"(see `codealign runs --store {store.root}`)") from None
    return Manifest(raw["run_id"], raw["flow"], raw["config"], [RunItem(**i) for i in raw["items"]])


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


def summarize(store: ArtifactStore, run_id: str) -> RunSummary:
    manifest = read_manifest(store, run_id)
    status = read_status(store, run_id)
    done = {i.key for i in manifest.items if is_complete(store, i)}
    failed = [f"{i.label} ({i.key}): {status.failed[i.key]}" for i in manifest.items
              if status and i.key in status.failed and i.key not in done]
    if status:
        failed += [f"{uri}: {err}" for uri, err in status.bad_inputs.items()]
    state = status.state if status else "unknown"
    if state == "running" and len(done) == len(manifest.items) and manifest.items:
        state = "completed"
    return RunSummary(run_id, manifest.flow, state, len(manifest.items), len(done), failed,
                      status.updated_at if status else "")


def list_runs(store: ArtifactStore) -> list[RunSummary]:
    """Every run in the store, whatever flow made it."""
    ids = sorted(filter(None, map(layout.run_id_of, store.list(layout.RUNS))))
    summaries = []
    for run_id in ids:
        try:
            summaries.append(summarize(store, run_id))
        except (IntegrityError, KeyError, TypeError) as exc:  # one damaged run must not hide the others
            summaries.append(RunSummary(run_id, "?", "unreadable", 0, 0, [f"{type(exc).__name__}: {exc}"], ""))
    return summaries
