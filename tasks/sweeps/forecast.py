"""What a sweep will do, before it runs (``codealign sweep --plan``): per piece, the work it asks
for, what the store already holds, an estimate of its time; and the critical path.

Counts come from the config and the data (sources, benchmarks, prepared datasets); what only a
run can tell (how many preference pairs survive the judge, hence a DPO stage's examples and
checkpoints) is ``None``, shown as "unknown".  So is whether a piece is in the store when its key
needs a model's weights that are not on this machine (a hub model, a toy model not built yet):
only local model directories are fingerprinted here.  Time comes from throughput that earlier
sweeps in the same store measured (each piece records its work and its seconds), per kind of
piece; with none, it is unknown too.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.checkpoints import Checkpoint, fingerprint
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.sweeps import plan as sweep_plan
from codealign.tasks.sweeps import schedule
from codealign.tasks.sweeps.config import SweepConfig

# The work a piece's time is proportional to, per kind (the rate's denominator).
WORK_MEASURE = {"data": "generation_requests", "stage": "example_epochs", "eval": "generation_requests"}


@dataclass
class PieceForecast:
    label: str
    kind: str
    needs: list[str]
    generation_requests: int | None = None  # after sampling each shared prompt once
    generation_requests_separate: int | None = None  # sampling every benchmark on its own
    executions: int | None = None
    examples: int | None = None  # training examples (a stage)
    epochs: int | None = None
    evaluation_units: int | None = None
    in_store: str = "unknown"  # yes | partly | no | unknown
    seconds: float | None = None
    gpu_hours: float | None = None

    @property
    def example_epochs(self) -> int | None:
        return self.examples * self.epochs if self.examples is not None and self.epochs is not None else None

    def work(self) -> dict[str, int]:
        """What this piece's time is measured against (recorded with its time when it runs)."""
        amount = getattr(self, WORK_MEASURE[self.kind])
        return {WORK_MEASURE[self.kind]: amount} if amount is not None else {}


@dataclass
class SweepForecast:
    pieces: list[PieceForecast]
    critical_path: list[str]
    critical_path_seconds: float | None
    rates: dict[str, float] = field(default_factory=dict)  # seconds per unit of work, per kind

    def total(self, name: str) -> tuple[float, int]:
        """(the sum over the pieces where ``name`` is known, how many pieces it is unknown for)."""
        values = [getattr(p, name) for p in self.pieces]
        return sum(v for v in values if v is not None), sum(v is None for v in values)

    def to_json(self) -> dict[str, Any]:
        return {"pieces": [{**asdict(p), "example_epochs": p.example_epochs} for p in self.pieces],
                "critical_path": {"pieces": self.critical_path, "seconds": self.critical_path_seconds},
                "totals": {name: dict(zip(("known", "unknown_pieces"), self.total(name))) for name in
                           ("generation_requests", "generation_requests_separate", "executions",
                            "evaluation_units", "seconds", "gpu_hours")},
                "rates": self.rates}


def _local_model(ref: str) -> Checkpoint | None:
    """The fingerprint of ``ref`` if it is a model directory on this machine (nothing is
    downloaded or built to find out)."""
    path = Path(ref[len("file://"):] if ref.startswith("file://") else ref).expanduser()
    if "://" in ref and not ref.startswith("file://"):
        return None
    if not (path / "config.json").is_file():
        return None
    return fingerprint(str(path.resolve()))


def instruction_count(config: SweepConfig) -> int | None:
    from codealign.tasks.preferences.sources import load_source

    try:
        return len(load_source(config.data.source, config.data.limit).instructions)
    except Exception:  # noqa: BLE001 - a source that is not at hand: unknown, not an error of the plan
        return None


def eval_requests(config: SweepConfig, models: int, shots_runs: int = 0) -> tuple[int | None, int | None, int]:
    """(requests sampling shared prompts once, requests sampling each benchmark apart, units)
    for ``models`` models evaluated in the sweep's modes (and in Command mode once more per
    extra ICL shot count, ``shots_runs``); the requests are None where a benchmark's data is
    not at hand."""
    runs = len(config.evaluation.modes) + shots_runs
    try:
        problems = config.evaluation.select_problems()
    except Exception:  # noqa: BLE001 - data not on this machine: unknown, not an error of the plan
        return None, None, len(config.evaluation.benchmarks) * models * runs
    n = config.evaluation.sampling.n
    separate = sum(len(group) for group in problems.values()) * n
    distinct = len({(p.prompt, p.entry_point) for group in problems.values() for p in group}) * n
    return distinct * models * runs, separate * models * runs, len(problems) * models * runs


def _stage_examples(config: SweepConfig, store: ArtifactStore, run_id: str | None,
                    stage: sweep_plan.PlannedStage) -> int | None:
    from codealign.tasks.training.data import read_rows

    if config.data.sft_dataset:
        path = config.data.sft_dataset
    elif run_id and store.exists(layout.run_dataset(f"{run_id}-{stage.data.label}-data", f"{stage.dataset}.parquet")):
        path = store.uri(layout.run_dataset(f"{run_id}-{stage.data.label}-data", f"{stage.dataset}.parquet"))
    else:
        return None
    try:
        return len(read_rows(path))
    except Exception:  # noqa: BLE001 - unreadable here: unknown
        return None


def _checkpoints(config: SweepConfig, stage: sweep_plan.PlannedStage, examples: int | None) -> int | None:
    """How many checkpoints the stage saves (what its evaluation piece evaluates)."""
    if config.evaluation.checkpoints == "final":
        return 1
    if examples is None:
        return None
    settings = {**config.training.model_dump(), **config.stage_overrides.get(stage.technique, {})}
    per_step = settings["per_device_train_batch_size"] * settings["workers"]
    steps = math.ceil(examples / per_step) * settings["num_train_epochs"]
    return max(1, math.ceil(steps / settings["save_steps"]))


def _rates(store: ArtifactStore) -> dict[str, float]:
    """Seconds per unit of work, per kind of piece, from every piece earlier sweeps in this
    store recorded with its work (``runs/*/pieces/*.json``)."""
    seconds: dict[str, float] = {}
    work: dict[str, float] = {}
    for key in store.list(layout.RUNS):
        if "/pieces/" not in key:
            continue
        timing = store.get_json(key)
        measure = WORK_MEASURE.get(timing.get("kind", ""))
        amount = (timing.get("work") or {}).get(measure or "")
        if timing.get("state") == "completed" and amount and timing.get("started_at") is not None:
            seconds[timing["kind"]] = seconds.get(timing["kind"], 0.0) + timing["ended_at"] - timing["started_at"]
            work[timing["kind"]] = work.get(timing["kind"], 0.0) + amount
    return {kind: seconds[kind] / work[kind] for kind in seconds if work[kind]}


def forecast(config: SweepConfig, run_id: str | None = None) -> SweepForecast:
    """Every piece of ``config``'s sweep with its work, what the store holds of it (with
    ``run_id``: also what that run already finished) and its estimated time."""
    from codealign.tasks.evaluation.units import CheckpointEvalConfig, is_complete, make_units
    from codealign.tasks.preferences.generate import is_complete as shard_complete
    from codealign.tasks.preferences.generate import make_shards
    from codealign.tasks.preferences.sources import load_source

    store = ArtifactStore(config.store, create=False)  # a plan writes nothing
    plan = sweep_plan.expand(config)
    graph = schedule.pieces(plan, bool(config.data.sft_dataset))
    instructions = instruction_count(config)
    n_data = config.data.sampling.n
    out: list[PieceForecast] = []
    checkpoints: dict[str, int | None] = {}
    for piece in graph:
        f = PieceForecast(piece.label, piece.kind, list(piece.needs))
        if piece.kind == "data":
            job = next(j for j in plan.data_jobs if j.label == piece.label)
            f.generation_requests = f.generation_requests_separate = f.executions = (
                instructions * n_data if instructions is not None else None)
            model = _local_model(job.model)
            if model is not None and instructions is not None:
                shards = make_shards(sweep_plan.data_config(config, job), model,
                                     load_source(config.data.source, config.data.limit))
                done = sum(shard_complete(store, s) for s in shards)
                f.in_store = "yes" if done == len(shards) else "partly" if done else "no"
        elif piece.kind == "stage":
            stage = plan.stage(piece.label)
            settings = {**config.training.model_dump(), **config.stage_overrides.get(stage.technique, {})}
            f.examples, f.epochs = _stage_examples(config, store, run_id, stage), int(settings["num_train_epochs"])
            if stage.technique != "sft":
                f.generation_requests = f.generation_requests_separate = f.executions = 0
            elif settings["degradation_limit"]:  # its degradation check: greedy, the start and the final model
                checks = 2 * settings["degradation_limit"] * len(settings["degradation_benchmarks"] or ["default"])
                f.generation_requests = f.generation_requests_separate = f.executions = checks
            checkpoints[piece.label] = _checkpoints(config, stage, f.examples)
        elif piece.label == schedule.STARTS_EVAL:
            starts = [p.start(pw) for p in config.models for pw in config.pathways]
            extra_shots = len([s for s in config.evaluation.icl_shots if s != config.evaluation.shots])
            after, before, units = eval_requests(config, len(starts), extra_shots)
            f.generation_requests, f.generation_requests_separate, f.evaluation_units = after, before, units
            f.executions = before
            models = [_local_model(ref) for ref in starts]
            if all(m is not None for m in models) and not extra_shots:
                eval_config = CheckpointEvalConfig.model_validate({
                    **config.evaluation.model_dump(exclude={"modes", "checkpoints", "icl_shots"}),
                    "checkpoints": [m.uri for m in models], "modes": config.evaluation.modes, "store": config.store})
                done = sum(is_complete(store, u) for u in make_units(eval_config, models))
                f.in_store = "yes" if done == units else "partly" if done else "no"
        else:
            count = checkpoints.get(piece.needs[0])
            if count is not None:
                after, before, units = eval_requests(config, count)
                f.generation_requests, f.generation_requests_separate, f.evaluation_units = after, before, units
                f.executions = before
        if run_id and store.exists(layout.run_record(run_id, f"items/{piece.label}.json")):
            f.in_store = "yes"  # this run finished it already
        out.append(f)
    rates = _rates(store)
    for f in out:
        amount = f.work().get(WORK_MEASURE[f.kind])
        if f.in_store == "yes":
            f.seconds, f.gpu_hours = 0.0, 0.0
        elif amount is not None and f.kind in rates:
            f.seconds = round(amount * rates[f.kind], 1)
            gpus = (config.training.workers if f.kind == "stage" else config.data.engine.tensor_parallel_size) \
                if config.training.use_gpu else 0
            f.gpu_hours = round(f.seconds * gpus / 3600, 3)
    path_s, path = _critical_path(graph, out)
    return SweepForecast(out, path, path_s, {k: round(v, 4) for k, v in rates.items()})


def _critical_path(graph: list[schedule.Piece], pieces: list[PieceForecast]) -> tuple[float | None, list[str]]:
    """By estimated seconds when every piece has one; else the longest chain of pieces."""
    seconds = {p.label: p.seconds for p in pieces}
    if all(s is not None for s in seconds.values()):
        total, path = schedule.critical_path(graph, {k: float(v or 0) for k, v in seconds.items()})
        return round(total, 1), path
    _, path = schedule.critical_path(graph, {label: 1.0 for label in seconds})
    return None, path


def dumps(result: SweepForecast) -> str:
    return json.dumps(result.to_json(), indent=2)
