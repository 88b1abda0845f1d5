"""A training stage as a unit of work: keyed by content, its checkpoints and record in the store.

A stage's key hashes the starting model's content, the dataset's content and the settings that
change the weights (``StageConfig.result_settings``), so an identical stage is never trained
twice and a changed input is a new stage.  Under ``units/<key>/``:

    checkpoints/checkpoint-<step>/   merged Hugging Face model + tokenizer (what vLLM and
                                     `evaluate-checkpoints` load), with a lineage sidecar
    adapters/checkpoint-<step>/      LoRA stages: the PEFT adapter alone (MBs, to share or push;
                                     ``--model`` takes it), beside the merged model, not in it
    train-state/                     Ray Train's checkpoints: optimizer, scheduler, RNG and
                                     data position, for resuming after a kill
    stage.json                       the stage's record; its existence completes the stage
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.checkpoints import Checkpoint
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.runs import RunItem
from codealign.tasks.artifacts.store import ArtifactRef, ArtifactStore
from codealign.tasks.training.config import StageConfig
from codealign.tasks.training.data import TrainingData

CHECKPOINTS, TRAIN_STATE, RECORD = layout.STAGE_CHECKPOINTS, layout.TRAIN_STATE, layout.STAGE_RECORD


@dataclass(frozen=True)
class StageSpec:
    """Everything a training worker needs: the config and the content-identified inputs."""

    key: str
    config: StageConfig
    model: Checkpoint  # the starting model (also the reference model)
    data: TrainingData

    @property
    def bonbon_beta(self) -> float | None:
        return self.config.bonbon_beta_for(self.data.n) if self.config.stage == "bonbon" and self.data.n else None

    def artifact(self, name: str) -> str:
        return layout.unit_artifact(self.key, name)

    def checkpoint_key(self, step: int) -> str:
        return self.artifact(f"{CHECKPOINTS}/checkpoint-{step}")

    def adapter_key(self, step: int) -> str:
        return self.artifact(f"{layout.STAGE_ADAPTERS}/checkpoint-{step}")

    def label(self) -> str:
        return f"{self.config.stage} {self.config.pathway} {self.model.name}"

    def as_item(self) -> RunItem:
        return RunItem(self.key, self.label(), self.artifact(RECORD),
                       {"model": asdict(self.model), "data": asdict(self.data)})

    def checkpoint_meta(self, step: int, producer: dict[str, Any], tracking: dict[str, Any] | None = None,
                        kind: str = "checkpoint") -> ArtifactMeta:
        """Lineage of a checkpoint: the dataset and the starting model it was trained from, the
        stage config and the trackers' run ids (the code version is added by the store)."""
        params = {"stage_key": self.key, "step": step, "stage": self.config.model_dump(mode="json"),
                  "bonbon_beta": self.bonbon_beta, "tracking": tracking or {}}
        return ArtifactMeta(kind, producer,
                            (InputRef(self.data.uri, self.data.sha256), InputRef(self.model.uri, self.model.sha256)),
                            params)


def make_stage(config: StageConfig, model: Checkpoint, data: TrainingData) -> StageSpec:
    ident = json.dumps({"model": model.sha256, "data": data.sha256, "settings": config.result_settings()},
                       sort_keys=True)
    return StageSpec(hashlib.sha256(ident.encode()).hexdigest()[:24], config, model, data)


@dataclass
class Degradation:
    """Paper 003's warning sign: SFT made the model worse than where it started."""

    degraded: bool
    start_score: float
    sft_score: float
    threshold: float
    benchmarks: list[str]
    mode: str


def degradation(start_score: float, sft_score: float, config: StageConfig, benchmarks: list[str]) -> Degradation:
    """Degraded when the SFT model's held-out pass@1 is below the starting model's by more than the threshold."""
    threshold = config.degradation_threshold
    return Degradation(sft_score < start_score - threshold, start_score, sft_score, threshold, benchmarks,
                       config.resolved_eval_mode)


@dataclass
class StageRecord:
    """What a finished stage made and how it went."""

    key: str
    stage: str
    pathway: str
    model: dict[str, Any]
    dataset: dict[str, Any]
    checkpoints: list[dict[str, Any]]  # {step, uri, sha256}, in step order
    final_checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)  # first/last loss, rewards, examples seen
    degradation: dict[str, Any] | None = None
    tracking: dict[str, Any] = field(default_factory=dict)  # the trackers' runs (tracking.py)

    @property
    def final(self) -> dict[str, Any]:
        return self.checkpoints[-1]


def stage_checkpoints(store: ArtifactStore, spec: StageSpec) -> list[dict[str, Any]]:
    """The stage's complete checkpoints in the store, in step order."""
    prefix = spec.artifact(CHECKPOINTS)
    found = []
    for key in store.list(prefix):
        name = key.rsplit("/", 1)[-1]
        if name.startswith("checkpoint-") and name.removeprefix("checkpoint-").isdigit() and key == f"{prefix}/{name}":
            meta = store.meta(key)
            found.append({"step": int(name.removeprefix("checkpoint-")), "uri": meta.uri, "sha256": meta.sha256})
    return sorted(found, key=lambda c: c["step"])


def write_record(store: ArtifactStore, record: StageRecord, producer: dict[str, Any]) -> ArtifactRef:
    inputs = tuple(InputRef(c["uri"], c["sha256"]) for c in record.checkpoints)
    return store.put_json(layout.unit_artifact(record.key, RECORD), asdict(record),
                          ArtifactMeta("training-stage", producer, inputs))


def read_record(store: ArtifactStore, stage_key: str) -> StageRecord | None:
    """The record of the stage keyed ``stage_key``; None until the stage finished."""
    key = layout.unit_artifact(stage_key, RECORD)
    return StageRecord(**store.get_json(key)) if store.exists(key) else None
