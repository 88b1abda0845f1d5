"""Training settings speak TRL: its field names (the old ones still read, for one release, and
keep every stage key), pass-through `sft:` / `dpo:` sections checked against TRL's dataclasses,
and TRL's own YAML config files."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from codealign.tasks.artifacts.checkpoints import Checkpoint
from codealign.tasks.training.config import StageConfig, from_trl_config
from codealign.tasks.training.data import TrainingData
from codealign.tasks.training.stages import make_stage

MODEL = Checkpoint("file:///m", "m", None, "a" * 64)
DATA = TrainingData("file:///d.parquet", "b" * 64, 10, 8)
# Stage keys made by codealign before the renaming (batch_size=2, epochs=3, grad_accum=2,
# lr_scheduler=linear): a store made then must not retrain anything now.
KEYS_BEFORE = {"sft": "118fc7b372dd3cc6ea8c1c47", "dpo": "fbb7b5fa0326575cd5748899",
               "bonbon": "0d5895112318796bf73d4268"}


def config(**settings) -> StageConfig:
    return StageConfig.model_validate({"pathway": "fta", "model": "/m", "dataset": "/d.parquet", **settings})


@pytest.mark.parametrize("stage", ["sft", "dpo", "bonbon"])
def test_trl_names_and_old_names_give_the_stage_keys_of_before(stage):
    new = config(stage=stage, per_device_train_batch_size=2, num_train_epochs=3, gradient_accumulation_steps=2,
                 lr_scheduler_type="linear")
    with pytest.warns(FutureWarning, match="'batch_size' is now 'per_device_train_batch_size'"):
        old = config(stage=stage, batch_size=2, epochs=3, grad_accum=2, lr_scheduler="linear")
    assert old == new
    assert make_stage(new, MODEL, DATA).key == make_stage(old, MODEL, DATA).key == KEYS_BEFORE[stage]
    # a section for the other trainer does not change this stage's key either
    other = "dpo" if stage == "sft" else "sft"
    assert make_stage(new.model_copy(update={other: {"max_grad_norm": 0.5}}), MODEL, DATA).key == KEYS_BEFORE[stage]


def test_sections_pass_any_trl_field_to_the_trainer_config(tmp_path):
    from codealign.tasks.training.stages import make_stage as stage_of
    from codealign.tasks.training.trainer import training_args

    sft = config(stage="sft", sft={"max_grad_norm": 0.5, "optim": "adamw_torch", "neftune_noise_alpha": 5.0})
    args = training_args(stage_of(sft, MODEL, DATA), str(tmp_path))
    assert (args.max_grad_norm, args.optim, args.neftune_noise_alpha) == (0.5, "adamw_torch", 5.0)
    assert make_stage(sft, MODEL, DATA).key != KEYS_BEFORE["sft"]  # a weight-changing setting: a new stage
    dpo = config(stage="dpo", dpo={"label_smoothing": 0.1, "max_grad_norm": 0.3})
    args = training_args(stage_of(dpo, MODEL, DATA), str(tmp_path))
    assert (args.label_smoothing, args.max_grad_norm, args.beta) == (0.1, 0.3, 0.1)


@pytest.mark.parametrize("section, message", [
    ({"sft": {"max_grad_norms": 1.0}}, "sft: max_grad_norms: not a field of TRL's SFTConfig"),
    ({"dpo": {"loss_typ": "ipo"}}, "dpo: loss_typ: not a field of TRL's DPOConfig"),
    ({"sft": {"packing": True}}, "sft.packing: refused: packing mixes examples .* per-example resume log"),
    ({"sft": {"learning_rate": 1e-4}}, "sft.learning_rate: set by codealign itself .use the training setting"),
    ({"dpo": {"output_dir": "x"}}, "dpo.output_dir: set by codealign itself"),
])
def test_a_section_field_trl_lacks_or_codealign_owns_is_named(section, message):
    with pytest.raises(ValidationError, match=message):
        config(stage="sft", **section)


def test_a_trl_yaml_config_maps_what_codealign_has_and_names_the_rest(tmp_path):
    """TRL's own example config (trl sft --config), ScriptArguments and ModelConfig fields mixed
    with SFTConfig's, read by `codealign train --config` as it is."""
    import yaml

    from codealign.flows.flow_commands import read_train_config
    from codealign.tasks.training.trainer import training_args

    trl_yaml = tmp_path / "sft_trl.yaml"
    trl_yaml.write_text(yaml.safe_dump({
        "model_name_or_path": "Qwen/Qwen2.5-0.5B", "model_revision": "main", "dataset_name": "trl-lib/Capybara",
        "use_peft": True, "lora_r": 32, "lora_alpha": 16, "lora_target_modules": "all-linear",
        "learning_rate": 2.0e-5, "num_train_epochs": 1, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 8, "gradient_checkpointing": True, "max_grad_norm": 0.3, "logging_steps": 25,
        "eval_strategy": "steps", "output_dir": "Qwen2-0.5B-SFT", "push_to_hub": True, "torch_dtype": "bfloat16",
        "packing": False,
    }))
    settings = read_train_config(trl_yaml)
    assert settings["model"] == "Qwen/Qwen2.5-0.5B@main" and settings["dataset"] == "trl-lib/Capybara"
    assert (settings["adapter"], settings["lora_r"], settings["lora_alpha"]) == ("lora", 32, 16)
    assert settings["sft"]["max_grad_norm"] == 0.3 and settings["dpo"]["max_grad_norm"] == 0.3
    stage = StageConfig.model_validate({**settings, "stage": "sft", "pathway": "pta"})
    args = training_args(make_stage(stage, MODEL, DATA), str(tmp_path))
    assert (args.learning_rate, args.gradient_accumulation_steps, args.max_grad_norm) == (2.0e-5, 8, 0.3)
    _, ignored = from_trl_config(yaml.safe_load(trl_yaml.read_text()))
    assert {"output_dir", "logging_steps", "lora_target_modules", "torch_dtype", "gradient_checkpointing"} <= \
        set(ignored)
    with pytest.raises(ValueError, match="packing: refused"):
        from_trl_config({"model_name_or_path": "m", "packing": True})


def test_old_flags_still_work_on_the_command_line():
    from typer.testing import CliRunner

    from codealign.cli import app

    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--num-train-epochs" in shown and "--epochs" in shown and "--per-device-train-batch-size" in shown
