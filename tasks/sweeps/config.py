"""What an alignment sweep is: a typed config (the Prefect UI form of ``alignment-sweep``) and
its YAML presets.

The grid is model pairs (a pretrained model and its instruction-tuned sibling) × pathways
(PTA from the pretrained model, FTA from the sibling) × objectives (functional, or one
non-functional dimension) × seeds × LoRA ranks; each branch trains the techniques asked for
(SFT, then DPO and/or BoNBoN from the SFT model) and every checkpoint is evaluated on the
benchmarks in both modes.  Presets (``tasks/sweeps/presets/*.yaml``): ``toy`` (the default;
offline on a 2-core CPU), ``paper-001``, ``paper-002``, ``paper-003`` (the papers' grids, with
hub models: they run wherever their weights can be reached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from codealign.tasks.artifacts.placement import RunPlacement
from codealign.tasks.errors import CodealignError
from codealign.tasks.evaluation.settings import SHOT_COUNTS, EvalSettings
from codealign.tasks.generation.prompts import Mode
from codealign.tasks.generation.sampling import EngineSettings, SamplingSettings
from codealign.tasks.preferences.nonfunctional import DIMENSIONS
from codealign.tasks.preferences.pairs import PairSettings
from codealign.tasks.training.config import (
    LORA_PRESETS,
    Pathway,
    Stage,
    StageConfig,
    TrainSettings,
    trl_names,
)

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
Objective = Literal["functional", "instruction_following", "readability", "complexity", "style", "explanation"]
OBJECTIVES: tuple[str, ...] = ("functional", *DIMENSIONS)


class SweepError(CodealignError, ValueError):
    """A sweep config or preset that cannot run; the message names the preset/file and field."""


class ModelPair(BaseModel):
    """A pretrained model and its instruction-tuned sibling (paper 003's pathways start from them)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short name used in run ids and reports", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    base: str = Field(description="pretrained model (PTA starts here): directory, hub id or toy-base")
    instruct: str = Field(description="instruction-tuned sibling (FTA starts here): directory, hub id or toy-instruct")

    def start(self, pathway: Pathway) -> str:
        return self.base if pathway == "pta" else self.instruct


def _data_sampling() -> SamplingSettings:
    return SamplingSettings(n=8, temperature=0.8, top_p=0.95, max_tokens=512)


class DataSettings(BaseModel):
    """How each starting model's training data is made by ``generate-preferences`` (PTA samples
    in Flow mode — a pretrained model completes code — and FTA in Command mode)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("toy-train", description="instructions: a built-in source or a JSONL file")
    limit: int | None = Field(None, ge=1, description="first N instructions of the source")
    sampling: SamplingSettings = Field(default_factory=_data_sampling, description="n responses per instruction")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    pairs: PairSettings = Field(default_factory=PairSettings)
    shard_size: int = Field(64, ge=1, description="instructions per shard (the unit of resumption)")
    sft_dataset: str | None = Field(
        None, description="a prepared prompt/completion parquet (e.g. CodeAlpaca) for SFT instead of generated data")


class SweepEvaluation(EvalSettings):
    """How every checkpoint of the sweep is evaluated (one ``evaluate-checkpoints`` run)."""

    modes: list[Mode] = Field(default_factory=lambda: ["command", "flow"], description="command and/or flow")
    checkpoints: Literal["all", "final"] = Field("all", description="every checkpoint-<step>, or each stage's last")
    icl_shots: list[int] = Field(default_factory=list, description="also evaluate the starting models in Command mode "
                                 "with these in-context shot counts (paper 002's ICL arm)")

    @field_validator("icl_shots")
    @classmethod
    def _shot_counts(cls, shots: list[int]) -> list[int]:
        for s in shots:
            if s not in SHOT_COUNTS:
                raise ValueError(f"icl shots must be among {SHOT_COUNTS}, got {s}")
        return sorted(set(shots))


class RegressionSettings(BaseModel):
    """When a sweep fails for being worse than the previous completed sweep of its deployment
    (else of its preset): a cell's pass@1 dropped beyond noise (its 95% paired interval over
    tasks below 0) and by more than ``threshold_points``.  The results stay stored; the report names the cells."""

    model_config = ConfigDict(extra="forbid")

    threshold_points: float = Field(0.0, ge=0, description="a drop must also exceed this many points of pass@1")
    techniques: list[str] | None = Field(None, description="only cells of these techniques (base, sft, dpo, "
                                         "bonbon); none: every cell")
    benchmarks: list[str] | None = Field(None, description="only cells of these benchmarks; none: every cell")


class SweepConfig(RunPlacement):
    """The grid, how its data is made, how each stage trains, how checkpoints are evaluated."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(None, description="the preset this config started from (informational)")
    models: list[ModelPair] = Field(min_length=1, description="model pairs (pretrained + instruction-tuned)")
    pathways: list[Pathway] = Field(default_factory=lambda: ["pta", "fta"], description="pta and/or fta")
    techniques: list[Stage] = Field(default_factory=lambda: ["sft", "dpo", "bonbon"],
                                    description="sft, then dpo and/or bonbon from the SFT model")
    objectives: list[Objective] = Field(default_factory=lambda: ["functional"],
                                        description="functional, or non-functional dimensions (one DPO/BoNBoN each)")
    seeds: list[int] = Field(default_factory=lambda: [0], description="one branch per seed (data and training)")
    lora_ranks: list[int] = Field(default_factory=lambda: [16], description="one branch per LoRA rank (LoRA adapter)")
    data: DataSettings = Field(default_factory=DataSettings)
    training: TrainSettings = Field(default_factory=TrainSettings, description="settings of every stage")
    stage_overrides: dict[Stage, dict[str, Any]] = Field(
        default_factory=dict, description="per technique, settings that differ from `training` "
                                          "(e.g. dpo: {num_train_epochs: 3})")
    evaluation: SweepEvaluation = Field(default_factory=SweepEvaluation)
    early_stop: bool = Field(True, description="skip a branch's DPO/BoNBoN when its SFT stage degraded")
    max_parallel: int = Field(4, ge=1, description="pieces (data jobs, stages, evaluations) run at once, at most; "
                              "fewer when the cluster cannot hold that many training stages")
    regression: RegressionSettings | None = Field(
        None, description="fail the sweep when a cell is significantly worse than in the previous completed "
                          "sweep of its deployment or preset (none: never)")

    @field_validator("stage_overrides")
    @classmethod
    def _override_names(cls, overrides: dict[Stage, dict[str, Any]]) -> dict[Stage, dict[str, Any]]:
        return {technique: trl_names(settings) for technique, settings in overrides.items()}

    @field_validator("pathways", "techniques", "objectives", "seeds", "lora_ranks")
    @classmethod
    def _distinct(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        if not values and info.field_name != "techniques":  # no techniques: an evaluation-only sweep
            raise ValueError("at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"repeated values in {values}")
        return values

    @field_validator("lora_ranks")
    @classmethod
    def _preset_ranks(cls, ranks: list[int]) -> list[int]:
        for r in ranks:
            if r not in LORA_PRESETS:
                raise ValueError(f"LoRA rank {r} is not a preset ({', '.join(map(str, LORA_PRESETS))})")
        return ranks

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model pair names repeat: {names}")
        preference = [t for t in self.techniques if t != "sft"]
        if self.objectives != ["functional"] and not preference:
            raise ValueError("non-functional objectives need dpo or bonbon among the techniques")
        if self.data.sft_dataset and preference:
            raise ValueError("data.sft_dataset serves SFT-only sweeps; dpo/bonbon need generated pairs")
        for technique in self.techniques:  # a misspelt override fails now, not hours into the sweep
            overrides = self.stage_overrides.get(technique, {})
            try:
                StageConfig.model_validate({**self.training.model_dump(), **overrides, "stage": technique,
                                            "pathway": "fta", "model": "m", "dataset": "d.parquet"})
            except ValidationError as exc:
                err = exc.errors()[0]
                raise ValueError(f"stage_overrides.{technique}.{'.'.join(map(str, err['loc']))}: "
                                 f"{err['msg']}") from None
        return self


def with_trl_names(settings: dict[str, Any]) -> dict[str, Any]:
    """A sweep's settings (a preset, a user's file) with old training names turned into TRL's,
    before one layer is merged over another (so an old name in a file overrides a preset)."""
    settings = dict(settings)
    if isinstance(settings.get("training"), dict):
        settings["training"] = trl_names(settings["training"])
    if isinstance(settings.get("stage_overrides"), dict):
        settings["stage_overrides"] = {k: trl_names(v) if isinstance(v, dict) else v
                                       for k, v in settings["stage_overrides"].items()}
    return settings


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """The preset's settings as a mapping (merged under a user's file and flags)."""
    import yaml

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise SweepError(f"no preset {name!r}; presets: {', '.join(preset_names())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {**data, "preset": name}


def load_preset(name: str, **overrides: Any) -> SweepConfig:
    """A preset as a validated config; ``overrides`` (top-level fields) replace its values."""
    try:
        return SweepConfig.model_validate({**read_preset(name), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SweepError(f"preset {name}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
