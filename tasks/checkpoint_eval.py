"""Checkpoint evaluation split into resumable units, and the three stages of a unit.

A unit is (checkpoint content hash, benchmark, mode, result-affecting settings).  Its artifacts
live in the store under ``units/<key>/`` — ``samples.jsonl``, ``verdicts.jsonl``,
``scores.json`` — written in that order, each with its lineage.  A unit is complete when its
``scores.json`` exists; each stage skips work whose artifact already exists, so any rerun
(a new run, ``codealign resume``, a Prefect "Retry") does only what is missing, and two runs
over the same checkpoint share its units.

The stage functions here are plain Python (no Prefect, no Ray): ``flows/evaluate_checkpoints``
wraps them as Prefect tasks running on Ray, and ``benchmarks/resume_cost.py`` calls them
directly to measure what the orchestration costs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from tasks.checkpoints import Checkpoint, local_path, validate
from tasks.evaluation import EvaluateConfig, sample_model, select_problems
from tasks.lineage import ArtifactMeta, InputRef
from tasks.sampling import EngineSettings, SamplingSettings
from tasks.sandbox.limits import Limits
from tasks.store import ArtifactRef, ArtifactStore, to_uri

FLOW_NAME = "evaluate-checkpoints"


class CheckpointEvalConfig(BaseModel):
    """What `codealign evaluate-checkpoints` runs (also the Prefect UI form of the flow)."""

    checkpoints: list[str] = Field(
        min_length=1, description="checkpoint directories/URIs, or training output directories holding checkpoint-<step>")
    store: str = Field("./runs", description="artifact store root: a directory, file:// or s3://bucket/prefix")
    benchmarks: list[str] = Field(default_factory=lambda: ["humaneval"])
    modes: list[Literal["command", "flow"]] = Field(default_factory=lambda: ["command"])
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    shots: int = 0
    ks: list[int] = Field(default_factory=lambda: [1, 10])
    limit: int | None = Field(None, ge=1, description="first N problems per benchmark (quick runs)")
    split: str | None = None
    limits: Limits = Field(default_factory=Limits)
    workers: int | None = Field(None, description="sandbox workers per execute task (default: the node's cores)")
    ray_address: str | None = Field(None, description="none = a local Ray; 'auto' or ray://host:port = a cluster")

    @field_validator("store")
    @classmethod
    def _absolute_store(cls, value: str) -> str:
        """Ray workers on other nodes (other working directories) must find the same store."""
        return to_uri(value)

    @field_validator("checkpoints")
    @classmethod
    def _absolute_checkpoints(cls, value: list[str]) -> list[str]:
        return [v if "://" in v else os.path.abspath(v) for v in value]

    def unit_config(self, model: str, benchmark: str, mode: str) -> EvaluateConfig:
        return EvaluateConfig(model=model, benchmarks=[benchmark], mode=mode, sampling=self.sampling,
                              engine=self.engine, shots=self.shots, ks=self.ks, limit=self.limit,
                              split=self.split, limits=self.limits, workers=self.workers)


@dataclass(frozen=True)
class Unit:
    """One (checkpoint, benchmark, mode, settings) evaluation."""

    key: str
    checkpoint: Checkpoint
    benchmark: str
    mode: str

    def artifact(self, name: str) -> str:
        return f"units/{self.key}/{name}"

    def label(self) -> str:
        return f"{self.checkpoint.name} {self.benchmark} {self.mode}"


def result_settings(config: CheckpointEvalConfig) -> dict[str, Any]:
    """The settings that can change a unit's numbers (not where or how fast it runs)."""
    return json.loads(config.model_dump_json(include={"sampling", "engine", "shots", "ks", "limit", "split", "limits"}))


def make_units(config: CheckpointEvalConfig, checkpoints: list[Checkpoint]) -> list[Unit]:
    settings = json.dumps(result_settings(config), sort_keys=True)
    units: dict[str, Unit] = {}
    for ckpt in checkpoints:
        for benchmark in config.benchmarks:
            for mode in config.modes:
                ident = json.dumps([ckpt.sha256, benchmark, mode, settings])
                key = hashlib.sha256(ident.encode()).hexdigest()[:24]
                # two paths with the same content are one unit (evaluated once, under the first path)
                units.setdefault(key, Unit(key, ckpt, benchmark, mode))
    return list(units.values())


def is_complete(store: ArtifactStore, unit: Unit) -> bool:
    return store.exists(unit.artifact("scores.json"))


def _meta(kind: str, unit: Unit, config: CheckpointEvalConfig, inputs: tuple[InputRef, ...],
          producer: dict[str, Any]) -> ArtifactMeta:
    params = {"unit": unit.key, "checkpoint": unit.checkpoint.uri, "step": unit.checkpoint.step,
              "benchmark": unit.benchmark, "mode": unit.mode, **result_settings(config)}
    return ArtifactMeta(kind, producer, inputs, params)


def _existing(store: ArtifactStore, key: str) -> ArtifactRef | None:
    if not store.exists(key):
        return None
    meta = store.meta(key)
    return ArtifactRef(meta.uri, meta.sha256, meta.size)


def sample_unit(store: ArtifactStore, unit: Unit, config: CheckpointEvalConfig, producer: dict[str, Any],
                llm: Any = None) -> ArtifactRef:
    """Stage 1: sample the unit's prompts, with ``llm`` (the caller's vLLM engine for this
    checkpoint) or else this process's engine for it: started here, after any engine for another
    checkpoint is shut down (a stage process moves from checkpoint to checkpoint and holds one).
    A corrupt checkpoint fails before that, naming its file."""
    from tasks.sampling import release_engines

    if ref := _existing(store, unit.artifact("samples.jsonl")):
        return ref
    validate(unit.checkpoint.uri)
    path = local_path(unit.checkpoint)
    if llm is None:
        release_engines(keep=path)
    cfg = config.unit_config(path, unit.benchmark, unit.mode)
    records = sample_model(cfg, select_problems(cfg), llm)
    checkpoint = InputRef(unit.checkpoint.uri, unit.checkpoint.sha256)
    return store.put_jsonl(unit.artifact("samples.jsonl"), [asdict(r) for r in records],
                           _meta("samples", unit, config, (checkpoint,), producer))


def execute_unit(store: ArtifactStore, unit: Unit, config: CheckpointEvalConfig, samples: ArtifactRef,
                 producer: dict[str, Any]) -> ArtifactRef:
    """Stage 2: run every sample in the sandbox."""
    from tasks.execute import execute
    from tasks.samples import Sample

    if ref := _existing(store, unit.artifact("verdicts.jsonl")):
        return ref
    cfg = config.unit_config("-", unit.benchmark, unit.mode)
    problems = select_problems(cfg)[unit.benchmark]
    rows = store.get_jsonl(samples.uri)
    batch = [Sample(r["task_id"], r["index"], r["completion"], r["solution"]) for r in rows]
    verdicts = execute(problems, batch, config.limits, config.workers)
    return store.put_jsonl(unit.artifact("verdicts.jsonl"), [v.to_json() for v in verdicts],
                           _meta("verdicts", unit, config, (InputRef(samples.uri, samples.sha256),), producer))


def score_unit(store: ArtifactStore, unit: Unit, config: CheckpointEvalConfig, verdicts: ArtifactRef,
               producer: dict[str, Any]) -> ArtifactRef:
    """Stage 3: pass@k of the unit; completes it."""
    from tasks.scoring import score

    if ref := _existing(store, unit.artifact("scores.json")):
        return ref
    rows = store.get_jsonl(verdicts.uri)
    scores = score(rows, config.ks)
    scores["unit"] = {"key": unit.key, "checkpoint": unit.checkpoint.uri, "checkpoint_sha256": unit.checkpoint.sha256,
                      "step": unit.checkpoint.step, "benchmark": unit.benchmark, "mode": unit.mode}
    return store.put_json(unit.artifact("scores.json"), scores,
                          _meta("scores", unit, config, (InputRef(verdicts.uri, verdicts.sha256),), producer))
