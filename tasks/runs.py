"""Run records in the artifact store: what a run asked for, which units it has, how it ended.

``runs/<run_id>/manifest.json`` holds the run's configuration, checkpoints and units (rewritten
when a resume discovers new checkpoints); ``runs/<run_id>/status.json`` its state, Prefect
flow-run ids and failed units with their errors; ``runs/<run_id>/results.json`` the table of
scores, whose lineage inputs are the units' ``scores.json``.  Unit completeness is always read
from the store itself (a unit is complete when its scores exist), so a run killed without
writing its status still reports the truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.checkpoint_eval import FLOW_NAME, CheckpointEvalConfig, Unit, is_complete
from tasks.checkpoints import Checkpoint
from tasks.lineage import ArtifactMeta, InputRef, utc_now
from tasks.store import ArtifactRef, ArtifactStore, IntegrityError, MissingArtifact


@dataclass
class RunStatus:
    run_id: str
    state: str  # running | completed | failed
    flow_run_ids: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # unit key -> error
    bad_checkpoints: dict[str, str] = field(default_factory=dict)  # uri -> error
    updated_at: str = ""


@dataclass
class RunSummary:
    """A run as `codealign runs` shows it."""

    run_id: str
    state: str
    units: int
    complete: int
    failed: list[str]
    updated_at: str


def manifest_key(run_id: str) -> str:
    return f"runs/{run_id}/manifest.json"


def write_manifest(store: ArtifactStore, run_id: str, config: CheckpointEvalConfig, units: list[Unit],
                   producer: dict[str, Any]) -> ArtifactRef:
    manifest = {
        "run_id": run_id,
        "flow": FLOW_NAME,
        "config": config.model_dump(mode="json"),
        "checkpoints": [asdict(c) for c in dict.fromkeys(u.checkpoint for u in units)],
        "units": [{"key": u.key, "checkpoint": u.checkpoint.uri, "benchmark": u.benchmark, "mode": u.mode}
                  for u in units],
    }
    inputs = tuple(InputRef(c["uri"], c["sha256"]) for c in manifest["checkpoints"])
    return store.put_json(manifest_key(run_id), manifest, ArtifactMeta("run-manifest", producer, inputs))


def read_manifest(store: ArtifactStore, run_id: str) -> dict[str, Any]:
    try:
        return store.get_json(manifest_key(run_id))
    except MissingArtifact:
        raise MissingArtifact(f"no run {run_id!r} in {store.root} (see `codealign runs --store {store.root}`)") from None


def run_config(store: ArtifactStore, run_id: str) -> CheckpointEvalConfig:
    return CheckpointEvalConfig.model_validate(read_manifest(store, run_id)["config"])


def write_status(store: ArtifactStore, status: RunStatus, producer: dict[str, Any]) -> None:
    status.updated_at = utc_now()
    store.put_json(f"runs/{status.run_id}/status.json", asdict(status), ArtifactMeta("run-status", producer))


def read_status(store: ArtifactStore, run_id: str) -> RunStatus | None:
    """The run's last recorded status; None if there is none or it cannot be trusted (a writer
    killed between content and sidecar): completeness is read from the units anyway."""
    try:
        return RunStatus(**store.get_json(f"runs/{run_id}/status.json"))
    except (MissingArtifact, IntegrityError):
        return None


def write_results(store: ArtifactStore, run_id: str, units: list[Unit], producer: dict[str, Any]) -> ArtifactRef:
    """The run's score table (one row per complete unit, in checkpoint-step order)."""
    rows, inputs = [], []
    for unit in units:
        if not is_complete(store, unit):
            continue
        key = unit.artifact("scores.json")
        scores, meta = store.get_json(key), store.meta(key)
        bench = scores["benchmarks"].get(unit.benchmark, {})
        rows.append({"checkpoint": unit.checkpoint.name, "step": unit.checkpoint.step, "benchmark": unit.benchmark,
                     "mode": unit.mode, "unit": unit.key,
                     **{k: v for k, v in bench.items() if k.startswith("pass@") or k in ("tasks", "samples")}})
        inputs.append(InputRef(meta.uri, meta.sha256))
    return store.put_json(f"runs/{run_id}/results.json", {"run_id": run_id, "rows": rows},
                          ArtifactMeta("run-results", producer, tuple(inputs)))


def units_of(store: ArtifactStore, run_id: str) -> list[Unit]:
    manifest = read_manifest(store, run_id)
    checkpoints = {c["uri"]: Checkpoint(**c) for c in manifest["checkpoints"]}
    return [Unit(u["key"], checkpoints[u["checkpoint"]], u["benchmark"], u["mode"]) for u in manifest["units"]]


def summarize(store: ArtifactStore, run_id: str) -> RunSummary:
    units = units_of(store, run_id)
    status = read_status(store, run_id)
    complete = [u for u in units if is_complete(store, u)]
    done = {u.key for u in complete}
    failed = [f"{u.label()} ({u.key}): {status.failed[u.key]}" for u in units
              if status and u.key in status.failed and u.key not in done]
    if status:
        failed += [f"{uri}: {err}" for uri, err in status.bad_checkpoints.items()]
    state = status.state if status else "unknown"
    if state == "running" and len(complete) == len(units) and units:
        state = "completed"
    return RunSummary(run_id, state, len(units), len(complete), failed, status.updated_at if status else "")


def list_runs(store: ArtifactStore) -> list[RunSummary]:
    ids = sorted({k.split("/")[1] for k in store.list("runs") if k.endswith("/manifest.json")})
    summaries = []
    for run_id in ids:
        try:
            summaries.append(summarize(store, run_id))
        except IntegrityError as exc:  # one damaged run must not hide the others
            summaries.append(RunSummary(run_id, "unreadable", 0, 0, [str(exc)], ""))
    return summaries


def kept_units(store: ArtifactStore, run_id: str, current: list[Unit]) -> list[Unit]:
    """Units of the run's previous manifest whose checkpoint path is no longer found (deleted by
    a trainer's save_total_limit, moved): their results stay part of the run."""
    try:
        previous = units_of(store, run_id)
    except MissingArtifact:
        return []
    seen = {u.checkpoint.uri for u in current}
    keys = {u.key for u in current}
    return [u for u in previous if u.checkpoint.uri not in seen and u.key not in keys]
