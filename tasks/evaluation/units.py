"""Checkpoint evaluation split into resumable units, and the three stages of a unit.

A unit is (checkpoint content hash, benchmark, mode, result-affecting settings).  Its artifacts
live in the store under ``units/<key>/`` — ``samples.jsonl``, ``verdicts.jsonl``,
``scores.json`` — written in that order, each with its lineage.  A unit is complete when its
``scores.json`` exists; each stage skips work whose artifact already exists, so any rerun
(a new run, ``codealign resume``, a Prefect "Retry") does only what is missing, and two runs
over the same checkpoint share its units.

The stages are the evaluation pipeline's (tasks/evaluation/pipeline.py) with store artifacts
for inputs and outputs.  They are plain Python (no Prefect, no Ray): ``flows/evaluate_checkpoints``
wraps them as Prefect tasks running on Ray, and ``benchmarks/resume_cost.py`` calls them
directly to measure what the orchestration costs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field, field_validator

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.checkpoint_cache import local_copy
from codealign.tasks.artifacts.checkpoints import Checkpoint, validate
from codealign.tasks.artifacts.leases import LeaseRecord, produce_once
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.placement import RunPlacement
from codealign.tasks.artifacts.runs import Manifest, RunItem
from codealign.tasks.artifacts.store import (
    ArtifactRef,
    ArtifactStore,
    MissingArtifact,
)
from codealign.tasks.evaluation.efficiency import label_efficiency
from codealign.tasks.evaluation.generation_fidelity import label_fidelity
from codealign.tasks.evaluation.pipeline import (
    execute_samples,
    sample_model,
    score_verdicts,
)
from codealign.tasks.evaluation.settings import EvalSettings
from codealign.tasks.evaluation.taxonomy import label_failures
from codealign.tasks.generation.prompts import Mode
from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.registry import benchmark_digest


class CheckpointEvalConfig(EvalSettings, RunPlacement):
    """What `codealign evaluate-checkpoints` runs (also the Prefect UI form of the flow)."""

    checkpoints: list[str] = Field(
        min_length=1,
        description="checkpoint directories/URIs, or training output directories holding checkpoint-<step>")
    modes: list[Mode] = Field(default_factory=lambda: ["command"], description="command and/or flow")

    @field_validator("checkpoints")
    @classmethod
    def _absolute_checkpoints(cls, value: list[str]) -> list[str]:
        return [v if "://" in v else os.path.abspath(v) for v in value]


@dataclass(frozen=True)
class Unit:
    """One (checkpoint, benchmark, mode, settings) evaluation."""

    key: str
    checkpoint: Checkpoint
    benchmark: str
    mode: Mode

    def artifact(self, name: str) -> str:
        return layout.unit_artifact(self.key, name)

    def label(self) -> str:
        return f"{self.checkpoint.name} {self.benchmark} {self.mode}"

    def as_item(self) -> RunItem:
        return RunItem(self.key, self.label(), self.artifact("scores.json"),
                       {"checkpoint": asdict(self.checkpoint), "benchmark": self.benchmark, "mode": self.mode})

    @classmethod
    def from_item(cls, item: RunItem) -> Unit:
        return cls(item.key, Checkpoint(**item.data["checkpoint"]), item.data["benchmark"], item.data["mode"])


def make_units(config: CheckpointEvalConfig, checkpoints: list[Checkpoint]) -> list[Unit]:
    settings = json.dumps(config.result_settings(), sort_keys=True)
    units: dict[str, Unit] = {}
    # a user's file or a generated (plugin) benchmark is also identified by its content
    contents = {benchmark: benchmark_digest(benchmark) for benchmark in config.benchmarks}
    for ckpt in checkpoints:
        for benchmark in config.benchmarks:
            for mode in config.modes:
                content = contents[benchmark]
                ident = json.dumps([ckpt.sha256, benchmark, mode, settings, *([content] if content else [])])
                key = hashlib.sha256(ident.encode()).hexdigest()[:24]
                # two paths with the same content are one unit (evaluated once, under the first path)
                units.setdefault(key, Unit(key, ckpt, benchmark, mode))
    return list(units.values())


def write_manifest(store: ArtifactStore, run_id: str, config: CheckpointEvalConfig, units: list[Unit],
                   producer: dict[str, Any]) -> ArtifactRef:
    """The run's manifest, named for the flow that made it (``producer["flow"]``); its lineage
    inputs are the checkpoints (URI + content hash)."""
    manifest = Manifest(run_id, producer["flow"], config.model_dump(mode="json"), [u.as_item() for u in units])
    checkpoints = tuple(dict.fromkeys(InputRef(u.checkpoint.uri, u.checkpoint.sha256) for u in units))
    return runs.write_manifest(store, manifest, checkpoints, producer)


def recorded_units(store: ArtifactStore, run_id: str) -> list[Unit]:
    """The units of the run's manifest (none for a new run)."""
    try:
        manifest = runs.read_manifest(store, run_id)
    except MissingArtifact:
        return []
    return [Unit.from_item(item) for item in manifest.items]


def run_config(store: ArtifactStore, run_id: str, flow: str | None = None) -> CheckpointEvalConfig:
    """The configuration run ``run_id`` was started with (validated again); with ``flow``, the
    run must have been made by that flow."""
    manifest = runs.read_manifest(store, run_id)
    if flow is not None and manifest.flow != flow:
        raise ValueError(f"run {run_id} is a {manifest.flow} run, not {flow}")
    return CheckpointEvalConfig.model_validate(manifest.config)


def kept_units(previous: list[Unit], current: list[Unit]) -> list[Unit]:
    """Units of the run's previous manifest whose checkpoint path is no longer found (deleted by
    a trainer's save_total_limit, moved): their results stay part of the run."""
    seen = {u.checkpoint.uri for u in current}
    keys = {u.key for u in current}
    return [u for u in previous if u.checkpoint.uri not in seen and u.key not in keys]


def is_complete(store: ArtifactStore, unit: Unit) -> bool:
    """What completes a unit is said once, by its run item (``done``)."""
    return runs.is_complete(store, unit.as_item())


def result_rows(store: ArtifactStore, units: list[Unit]) -> tuple[list[dict[str, Any]], tuple[InputRef, ...]]:
    """The run's score table (one row per complete unit, in the units' order) and the scores
    artifacts it was read from."""
    rows, inputs = [], []
    for unit in units:
        if not is_complete(store, unit):
            continue
        key = unit.artifact("scores.json")
        scores, meta = store.get_json(key), store.meta(key)
        bench = scores["benchmarks"].get(unit.benchmark, {})
        rows.append({"checkpoint": unit.checkpoint.name, "step": unit.checkpoint.step, "benchmark": unit.benchmark,
                     "mode": unit.mode, "unit": unit.key, "checkpoint_sha256": unit.checkpoint.sha256,
                     "checkpoint_uri": unit.checkpoint.uri,
                     **{k: v for k, v in bench.items()
                        if k.startswith("pass@") or k in ("tasks", "samples", "failures")}})
        inputs.append(InputRef(meta.uri, meta.sha256))
    return rows, tuple(inputs)


def _meta(kind: str, unit: Unit, config: CheckpointEvalConfig, inputs: tuple[InputRef, ...],
          producer: dict[str, Any]) -> ArtifactMeta:
    params = {"unit": unit.key, "checkpoint": unit.checkpoint.uri, "step": unit.checkpoint.step,
              "benchmark": unit.benchmark, "mode": unit.mode, **config.result_settings()}
    return ArtifactMeta(kind, producer, inputs, params)


def _produce(store: ArtifactStore, unit: Unit, name: str, make: Callable[[], ArtifactRef]) -> ArtifactRef:
    """The unit's artifact ``name``, made by ``make`` unless it exists; under the artifact's
    lease, so runs sharing the unit compute it once (the others wait for it and reuse it).
    Prints what it does: the flow's task logs say which run computed a unit."""
    key = unit.artifact(name)

    def computed() -> ArtifactRef:
        print(f"unit {unit.key}: computing {name} ({unit.label()})")
        return make()

    def waiting(lease: LeaseRecord | None) -> None:
        holder = f"{lease.host} pid {lease.pid}" if lease else "another run"
        print(f"unit {unit.key}: {name} is being computed by {holder}; waiting for it")

    return produce_once(store, key, computed, on_wait=waiting)


def sample_unit(unit: Unit, config: CheckpointEvalConfig, producer: dict[str, Any]) -> ArtifactRef:
    """Stage 1 for one unit (:func:`sample_units` of just that unit)."""
    return sample_units([unit], config, producer)[unit.key]


def sample_units(units: list[Unit], config: CheckpointEvalConfig, producer: dict[str, Any]) -> dict[str, ArtifactRef]:
    """Stage 1: sample the prompts of ``units`` — one checkpoint, one mode — together, with this
    process's engine for the checkpoint, started here after any engine for another checkpoint
    is shut down (a sampler moves from checkpoint to checkpoint and holds one).  Benchmarks
    whose prompts coincide (HumanEval and HumanEval+, task by task) share each prompt's
    samples (:func:`~codealign.tasks.evaluation.pipeline.sample_model`).  Each unit's
    ``samples.jsonl`` is still its own artifact, under its own lease: a unit already sampled
    (by an earlier run, or another run meanwhile) is reused.  A corrupt checkpoint fails before
    any engine starts, naming its file."""
    from codealign.tasks.generation.sampling import release_engines

    if len({(u.checkpoint.sha256, u.mode) for u in units}) > 1:
        raise ValueError("sample_units samples units of one checkpoint and one mode")
    store = ArtifactStore(config.store)
    sampled: dict[str, list[Any]] = {}

    def records_for(unit: Unit) -> list[Any]:
        if unit.benchmark not in sampled:  # the first unit to sample: every unit not yet sampled
            validate(unit.checkpoint.uri)
            path = local_copy(unit.checkpoint)
            release_engines(keep=path)
            todo = [u.benchmark for u in units
                    if u.benchmark not in sampled and not store.exists(u.artifact("samples.jsonl"))]
            todo = list(dict.fromkeys([unit.benchmark, *todo]))
            for benchmark in todo:
                sampled[benchmark] = []
            for record in sample_model(path, unit.mode, config, config.select_problems(todo)):
                sampled[record.benchmark].append(record)
        return sampled[unit.benchmark]

    def maker(unit: Unit) -> Callable[[], ArtifactRef]:
        def make() -> ArtifactRef:
            checkpoint = InputRef(unit.checkpoint.uri, unit.checkpoint.sha256)
            return store.put_jsonl(unit.artifact("samples.jsonl"), [asdict(r) for r in records_for(unit)],
                                   _meta("samples", unit, config, (checkpoint,), producer))
        return make

    return {unit.key: _produce(store, unit, "samples.jsonl", maker(unit)) for unit in units}


def sampling_groups(units: list[Unit]) -> list[list[Unit]]:
    """Units grouped by (checkpoint, mode), in the order given: each group is sampled at once."""
    groups: dict[tuple[str, str], list[Unit]] = {}
    for unit in units:
        groups.setdefault((unit.checkpoint.sha256, unit.mode), []).append(unit)
    return list(groups.values())


def execute_unit(unit: Unit, config: CheckpointEvalConfig, samples: ArtifactRef,
                 producer: dict[str, Any]) -> ArtifactRef:
    """Stage 2: run every sample in the sandbox; label each verdict with its failure class,
    generation fidelity and efficiency."""
    store = ArtifactStore(config.store)

    def make() -> ArtifactRef:
        rows = store.get_jsonl(samples.uri)
        batch = {unit.benchmark: [Sample(r["task_id"], r["index"], r["completion"], r["solution"]) for r in rows]}
        problems = config.select_problems([unit.benchmark])
        verdicts = execute_samples(problems, batch, config)
        labelled = label_failures(problems[unit.benchmark], unit.mode, rows, [v.to_json() for v in verdicts])
        labelled = label_fidelity(problems[unit.benchmark], unit.mode, rows, labelled)
        labelled = label_efficiency(problems[unit.benchmark], labelled, workers=config.workers)
        return store.put_jsonl(unit.artifact("verdicts.jsonl"), labelled,
                               _meta("verdicts", unit, config, (InputRef(samples.uri, samples.sha256),), producer))

    return _produce(store, unit, "verdicts.jsonl", make)


def score_unit(unit: Unit, config: CheckpointEvalConfig, verdicts: ArtifactRef,
               producer: dict[str, Any]) -> ArtifactRef:
    """Stage 3: pass@k of the unit; completes it."""
    store = ArtifactStore(config.store)

    def make() -> ArtifactRef:
        scores = score_verdicts(store.get_jsonl(verdicts.uri), config)
        scores["unit"] = {"key": unit.key, "checkpoint": unit.checkpoint.uri,
                          "checkpoint_sha256": unit.checkpoint.sha256, "step": unit.checkpoint.step,
                          "benchmark": unit.benchmark, "mode": unit.mode}
        return store.put_json(unit.artifact("scores.json"), scores,
                              _meta("scores", unit, config, (InputRef(verdicts.uri, verdicts.sha256),), producer))

    return _produce(store, unit, "scores.json", make)
