"""What one training stage is: a typed config (also the Prefect UI form of the ``train`` flow).

A stage is SFT, DPO or BoNBoN along a pathway (PTA: from a pretrained model; FTA: from its
instruction-tuned sibling), from a starting model, on a dataset artifact of
``generate-preferences``.  LoRA presets follow paper 002 (r in {16, 32, 64}, alpha = 2r,
dropout 0.1, lr 2e-4 cosine, 50 warmup steps, weight decay 0.05); full fine-tuning is
``adapter = "full"``.  Precision follows the device: bf16 on GPU, fp32 on CPU.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from codealign.tasks.artifacts.placement import RunPlacement
from codealign.tasks.artifacts.store import to_uri
from codealign.tasks.generation.prompts import Mode
from codealign.tasks.training.tracking import Tracker

Stage = Literal["sft", "dpo", "bonbon"]
Pathway = Literal["pta", "fta"]
LORA_PRESETS = (16, 32, 64)
FULL_LEARNING_RATE = 1e-5  # full fine-tuning moves every weight: a LoRA learning rate would wreck the model


def harmonic(m: int) -> float:
    return sum(1.0 / k for k in range(1, m + 1))


def bonbon_default_beta(n: int) -> float:
    """BoNBoN's beta for best-of-n data: 1 / (2 (n-1) H(n-1)) (Gui, Garbacea, Veitch 2024, Thm 3);
    n = 8 gives 0.02754820936639..."""
    if n < 2:
        raise ValueError(f"best-of-n needs n >= 2, got n = {n}")
    return 1.0 / (2 * (n - 1) * harmonic(n - 1))


class TrainSettings(BaseModel):
    """How to train: adapters, optimisation, batching, the SFT degradation check.  A stage
    (:class:`StageConfig`) adds what to train; a sweep applies one set to all its stages."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not ignored

    adapter: Literal["lora", "full"] = Field("lora", description="LoRA adapters (merged into every checkpoint) or full")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha (default 2r)")
    lora_r: int = Field(16, ge=1, le=256, description="LoRA rank (presets 16, 32, 64); alpha = 2r unless set")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout")
    learning_rate: float | None = Field(None, gt=0, description="default 2e-4 with LoRA, 1e-5 full")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup_steps: int = Field(50, ge=0, description="learning-rate warmup steps")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    epochs: float = Field(1.0, gt=0, description="passes over the dataset")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: the epochs decide)")
    batch_size: int = Field(4, ge=1, description="examples per worker per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(1024, ge=16, description="tokens per sequence (prompt + completion)")
    beta: float = Field(0.1, gt=0, description="DPO beta (IPO: its tau)")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="DPO loss")
    bonbon_alpha: float = Field(0.005, ge=0, le=1, description="BoNBoN's weight on the best response's NLL")
    bonbon_beta: float | None = Field(None, gt=0,
                                      description="BoNBoN beta (default 1/(2(n-1)H(n-1)) from the dataset's n)")
    bonbon_n: int | None = Field(None, ge=2, description="the n BoNBoN pairs were drawn from, for data without an "
                                                         "n column (the column wins)")
    save_steps: int = Field(50, ge=1, description="a checkpoint every N optimizer steps (and at the end)")
    seed: int = Field(0, description="seed of initialisation, data order and dropout")
    workers: int = Field(1, ge=1, description="Ray Train workers (one GPU each with use_gpu)")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs each worker reserves (and its torch threads on CPU)")
    use_gpu: bool = Field(False, description="GPU workers (NCCL, bf16) instead of CPU ones (gloo, fp32)")
    degradation_benchmarks: list[str] | None = Field(
        None, description="held-out benchmarks for the SFT degradation check "
                          "(default: toy for toy models, else humaneval)")
    degradation_threshold: float = Field(0.02, ge=0, description="pass@1 drop beyond which SFT counts as degraded")
    degradation_limit: int | None = Field(None, ge=1, description="first N problems of each degradation benchmark")
    eval_max_tokens: int = Field(512, ge=1, description="tokens generated per problem in the degradation check")
    eval_mode: Mode | None = Field(
        None, description="mode of the degradation check (default: flow for pta, command for fta)")
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers of the training curves and each checkpoint's evaluation: tensorboard "
                    "(event files in the store), mlflow (MLFLOW_TRACKING_URI), wandb (offline unless WANDB_MODE); "
                    "[] for none.  Not part of the stage's key")

    @field_validator("lora_r")
    @classmethod
    def _preset_rank(cls, rank: int, info: ValidationInfo) -> int:
        if rank not in LORA_PRESETS and info.data.get("lora_alpha") is None:
            raise ValueError(f"{rank} is not a preset ({', '.join(map(str, LORA_PRESETS))}); "
                             "set lora_alpha too to use another rank")
        return rank

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate or (2e-4 if self.adapter == "lora" else FULL_LEARNING_RATE)

    @property
    def resolved_lora_alpha(self) -> int:
        return self.lora_alpha or 2 * self.lora_r

    def bonbon_beta_for(self, n: int) -> float:
        return self.bonbon_beta if self.bonbon_beta is not None else bonbon_default_beta(n)


class StageConfig(TrainSettings, RunPlacement):
    """One training stage: what to train from, on what, how, and where it goes."""

    stage: Stage = Field(description="sft (prompt/completion), dpo or bonbon (prompt/chosen/rejected)")
    pathway: Pathway = Field(description="pta: from a pretrained model; fta: from its instruction-tuned sibling")
    model: str = Field(
        description="starting model: local directory, checkpoint, Hugging Face id or toy-base/toy-instruct")
    dataset: str = Field(description="parquet or JSONL file (path or URI), save_to_disk directory or hub dataset id "
                                     "(org/name@rev), in TRL's standard or conversational format")

    @field_validator("dataset")
    @classmethod
    def _absolute_dataset(cls, value: str) -> str:
        return to_uri(value) if "://" in value or os.path.exists(value) or value.startswith((".", "/")) else value

    @model_validator(mode="after")
    def _dpo_loss_only(self) -> StageConfig:
        if self.loss_type != "sigmoid" and self.stage != "dpo":
            raise ValueError(f"loss_type {self.loss_type} is a DPO loss; this is a {self.stage} stage")
        return self

    @property
    def resolved_eval_mode(self) -> Mode:
        return self.eval_mode or ("flow" if self.pathway == "pta" else "command")

    def result_settings(self) -> dict[str, Any]:
        """What changes the trained weights (the model and dataset count by content, elsewhere;
        workers stay: they set the global batch).  Not where it runs or how it is checked."""
        settings = json.loads(self.model_dump_json(exclude={"store", "ray_address", "model", "dataset",
                                                            "degradation_benchmarks", "cpus_per_worker",
                                                            "degradation_threshold", "degradation_limit",
                                                            "eval_mode", "eval_max_tokens", "report_to"}))
        if settings.get("bonbon_n") is None:  # added later: unset, it leaves existing stage keys as they were
            settings.pop("bonbon_n", None)
        if self.stage in ("dpo", "bonbon"):  # TRL's DPOTrainer sets every dropout, LoRA's included, to 0
            settings.pop("lora_dropout")  # (DPOConfig.disable_dropout): changing it changes nothing
        return settings
