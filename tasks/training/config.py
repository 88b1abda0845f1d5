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


# codealign's training settings carry TRL's names; these old names still read, for one release.
RENAMED = {"batch_size": "per_device_train_batch_size", "epochs": "num_train_epochs",
           "grad_accum": "gradient_accumulation_steps", "lr_scheduler": "lr_scheduler_type"}
# TRL fields codealign sets itself (from its own settings, or to keep its guarantees): not in sft:/dpo:.
OWNED_BY_CODEALIGN = {
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_length", "logging_steps",
    "save_strategy", "save_steps", "save_total_limit", "report_to", "run_name", "seed", "data_seed", "bf16", "fp16",
    "use_cpu", "dataloader_num_workers", "disable_tqdm", "remove_unused_columns", "save_only_model",
    "completion_only_loss", "assistant_only_loss", "beta", "loss_type", "gradient_checkpointing",
}
# What would break codealign's guarantees: packing mixes examples into one sequence, so the
# per-example resume log (examples_seen.json) could no longer tell which ones a step trained on.
REFUSED = {"packing": "packing mixes examples into one sequence, which breaks the per-example resume log"}


def trl_names(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the old names of renamed fields turned into TRL's (a warning each)."""
    import warnings

    settings = dict(settings)
    for old, new in RENAMED.items():
        if old in settings:
            warnings.warn(f"training setting {old!r} is now {new!r}, TRL's name; the old name goes in the next "
                          "release", FutureWarning, stacklevel=2)
            value = settings.pop(old)
            settings.setdefault(new, value)  # both given (an old file under new flags): the new name wins
    return settings


def check_trl_section(section_name: str, section: dict[str, Any]) -> dict[str, Any]:
    """An ``sft:`` / ``dpo:`` section, checked against TRL's own config dataclass: an unknown
    field is an error naming it, and so is one codealign sets itself or refuses."""
    if not section:
        return section
    import dataclasses

    from trl import DPOConfig, SFTConfig

    trl_config = SFTConfig if section_name == "sft" else DPOConfig
    known = {f.name for f in dataclasses.fields(trl_config)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{section_name}: {', '.join(unknown)}: not a field of TRL's {trl_config.__name__}")
    for name in sorted(section):
        if name in REFUSED and section[name]:
            raise ValueError(f"{section_name}.{name}: refused: {REFUSED[name]}")
        if name in OWNED_BY_CODEALIGN:
            raise ValueError(f"{section_name}.{name}: set by codealign itself"
                             + (f" (use the training setting {name})" if name in TrainSettings.model_fields else ""))
    return section


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
    lr_scheduler_type: str = Field("cosine", json_schema_extra={"old_name": "lr_scheduler"},
                                   description="transformers scheduler name")
    warmup_steps: int = Field(50, ge=0, description="learning-rate warmup steps")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    num_train_epochs: float = Field(1.0, gt=0, json_schema_extra={"old_name": "epochs"},
                                    description="passes over the dataset")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: the epochs decide)")
    per_device_train_batch_size: int = Field(4, ge=1, json_schema_extra={"old_name": "batch_size"},
                                             description="examples per worker per step")
    gradient_accumulation_steps: int = Field(1, ge=1, json_schema_extra={"old_name": "grad_accum"},
                                             description="gradient accumulation steps")
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
    sft: dict[str, Any] = Field(
        default_factory=dict, description="any other field of TRL's SFTConfig, by its name (YAML: an sft: section)")
    dpo: dict[str, Any] = Field(
        default_factory=dict, description="any other field of TRL's DPOConfig, for DPO and BoNBoN (a dpo: section)")
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers of the training curves and each checkpoint's evaluation: tensorboard "
                    "(event files in the store), mlflow (MLFLOW_TRACKING_URI), wandb (offline unless WANDB_MODE); "
                    "[] for none.  Not part of the stage's key")

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return trl_names(data) if isinstance(data, dict) else data

    @field_validator("sft", "dpo")
    @classmethod
    def _trl_fields(cls, section: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return check_trl_section(info.field_name or "", section)

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
    push_to_hub: str | None = Field(None, description="at the end of the stage, upload its final adapter (LoRA) or "
                                                      "model with its model card to this hub repo (org/name)")
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
                                                            "eval_mode", "eval_max_tokens", "report_to",
                                                            "push_to_hub"}))
        if settings.get("bonbon_n") is None:  # added later: unset, it leaves existing stage keys as they were
            settings.pop("bonbon_n", None)
        for old, new in RENAMED.items():  # the names stage keys were made with (keys stay valid)
            settings[old] = settings.pop(new)
        for section in ("sft", "dpo"):  # added later: empty, they leave existing stage keys as they were
            if not settings.get(section) or section != ("sft" if self.stage == "sft" else "dpo"):
                settings.pop(section, None)
        if self.stage in ("dpo", "bonbon"):  # TRL's DPOTrainer sets every dropout, LoRA's included, to 0
            settings.pop("lora_dropout")  # (DPOConfig.disable_dropout): changing it changes nothing
        return settings


# TRL's example configs mix ScriptArguments and ModelConfig with the trainer's fields; what
# codealign maps from them (besides every TrainSettings field, taken by its own name).
TRL_SCRIPT_FIELDS = {"model_name_or_path": "model", "dataset_name": "dataset"}


def from_trl_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A TRL YAML config (``trl sft --config FILE``) as codealign training settings, and the names
    of what codealign ignores in it.  ``model_revision`` pins the model (``model@revision``);
    ``use_peft`` picks LoRA or full fine-tuning; a trainer field codealign does not set itself goes
    to the ``sft:`` / ``dpo:`` section of the trainer that has it."""
    import dataclasses

    from trl import DPOConfig, SFTConfig

    sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
    dpo_fields = {f.name for f in dataclasses.fields(DPOConfig)}
    ours = set(TrainSettings.model_fields) - {"sft", "dpo"}
    settings: dict[str, Any] = {}
    ignored: list[str] = []
    data = trl_names(data)
    for name, value in data.items():
        if name in TRL_SCRIPT_FIELDS:
            settings[TRL_SCRIPT_FIELDS[name]] = value
        elif name == "model_revision":
            continue  # with model_name_or_path, below
        elif name == "use_peft":
            settings["adapter"] = "lora" if value else "full"
        elif name in ours:
            settings[name] = value
        elif name in REFUSED and value:
            raise ValueError(f"{name}: refused: {REFUSED[name]}")
        elif name not in OWNED_BY_CODEALIGN and (name in sft_fields or name in dpo_fields):
            for section, fields in (("sft", sft_fields), ("dpo", dpo_fields)):
                if name in fields:
                    settings.setdefault(section, {})[name] = value
        else:
            ignored.append(name)
    if data.get("model_revision") and "model" in settings:
        settings["model"] = f"{settings['model']}@{data['model_revision']}"
    return settings, sorted(ignored)
