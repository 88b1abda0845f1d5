"""Training pieces without Ray or Prefect: BoNBoN's exact loss (by hand, and through the
trainer on a real batch), stage configs and dataset checks, and a plain-TRL resume that must
reproduce an uninterrupted run (weights, examples)."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from codealign.tasks.artifacts.checkpoints import fingerprint
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.training.config import StageConfig, bonbon_default_beta
from codealign.tasks.training.data import DatasetError, check_dataset
from codealign.tasks.training.stages import make_stage


def test_bonbon_default_beta_is_the_papers():
    # 1 / (2 (n-1) H(n-1)), n = 8: H(7) = 363/140, so beta = 140 / (14 * 363)
    assert bonbon_default_beta(8) == pytest.approx(140 / (14 * 363), rel=1e-12)
    assert bonbon_default_beta(8) == pytest.approx(0.0275482093663912, rel=1e-12)
    assert bonbon_default_beta(2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n >= 2"):
        bonbon_default_beta(1)


def test_bonbon_loss_matches_a_hand_computation_on_two_pairs():
    import torch

    from codealign.tasks.training.bonbon import bonbon_loss

    chosen, rejected = torch.tensor([-12.0, -30.5]), torch.tensor([-20.0, -28.0])
    ref_chosen, ref_rejected = torch.tensor([-14.0, -31.0]), torch.tensor([-19.0, -29.5])
    alpha, beta = 0.005, 0.0275482093663912
    # pair 1: h = (-12 + 14) - (-20 + 19) = 3;     pair 2: h = (-30.5 + 31) - (-28 + 29.5) = -1
    target = 1 / (2 * beta)  # 18.15
    by_hand = [alpha * 12.0 + (1 - alpha) * (3 - target) ** 2, alpha * 30.5 + (1 - alpha) * (-1 - target) ** 2]
    loss = bonbon_loss(chosen, rejected, ref_chosen, ref_rejected, alpha, beta)
    assert float(loss) == pytest.approx(sum(by_hand) / 2, rel=1e-6)
    assert float(loss) == pytest.approx(0.5 * (0.06 + 0.995 * 15.15 ** 2 + 0.1525 + 0.995 * 19.15 ** 2), rel=1e-6)


def toy_rows(tokenizer, count: int, n: int | None = 8) -> list[dict]:
    from codealign.tasks.generation.prompts import chat_instruction_prompt, fenced
    from codealign.tasks.toy.families import toy_tasks

    rows = []
    for t in toy_tasks("train", 10)[:count]:
        rows.append({"instruction_id": t.identity, "prompt": chat_instruction_prompt(tokenizer, t.instruction, []),
                     "completion": fenced(t.source), "chosen": fenced(t.source),
                     "rejected": fenced(t.source.replace("return result", "return None")),
                     **({"n": n} if n else {})})
    return rows


def write_parquet(rows: list[dict], path: Path) -> str:
    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


@pytest.fixture(scope="module")
def instruct(toy_model_paths):
    from transformers import AutoTokenizer

    path = str(toy_model_paths["toy-instruct"])
    return path, AutoTokenizer.from_pretrained(path)


def stage(tmp_path: Path, model: str, rows: list[dict], kind: str, **settings):
    data = write_parquet(rows, tmp_path / f"{kind}.parquet")
    config = StageConfig(stage=kind, pathway="fta", model=model, dataset=data, store=str(tmp_path / "store"),
                         **{"per_device_train_batch_size": 2, "save_steps": 2, "warmup_steps": 0, "max_length": 256,
                            **settings})
    return make_stage(config, fingerprint(model), check_dataset(data, kind))


def test_bonbon_trainer_loss_uses_sequence_summed_log_probs(tmp_path, instruct):
    """Through the trainer on a real two-pair batch: the loss equals the formula evaluated on
    log-probabilities summed over each completion by plain forward passes."""
    import torch
    from preference_metrics import sequence_logp

    from codealign.tasks.training.bonbon import bonbon_loss
    from codealign.tasks.training.trainer import INDEX, build_trainer

    path, tokenizer = instruct
    rows = toy_rows(tokenizer, 2)
    spec = stage(tmp_path, path, rows, "bonbon", adapter="full")
    trainer = build_trainer(spec, path, str(tmp_path / "out"), None, {})
    with torch.no_grad():  # move the policy away from the reference, so h != 0
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    order = batch.pop(INDEX).tolist()
    trainer.model.eval()
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, batch))
        # what Trainer.evaluate asks for when compute_metrics is set: the loss and the logits
        with_outputs, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert float(with_outputs) == pytest.approx(loss)
    assert outputs.logits.shape[:2] == batch["input_ids"].shape

    def logps(model, key):
        return torch.tensor([sequence_logp(model, tokenizer, rows[i]["prompt"], rows[i][key]) for i in order])

    expected = bonbon_loss(logps(trainer.model, "chosen"), logps(trainer.model, "rejected"),
                           logps(trainer.ref_model, "chosen"), logps(trainer.ref_model, "rejected"),
                           0.005, bonbon_default_beta(8))
    assert loss == pytest.approx(float(expected), rel=1e-4)
    per_token = float(logps(trainer.model, "chosen").mean())  # what a per-token mean would not give
    assert abs(per_token) > 5


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_rows_cut_by_max_length_are_counted_and_reported(tmp_path, instruct, kind):
    """TRL keeps a too-long row's start, so its completion loses its end and EOS: such rows are
    counted on TRL's own tokenized rows, said in the progress lines and put in the metrics."""
    from codealign.tasks.training.trainer import build_trainer, truncated_rows

    path, tokenizer = instruct
    rows = toy_rows(tokenizer, 4)
    lengths = sorted(len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) for r in rows)
    limit = (lengths[0] + lengths[-1]) // 2  # cuts some rows, not all
    lines: list[str] = []
    trainer = build_trainer(stage(tmp_path, path, rows, kind, adapter="full", max_length=max(16, limit)),
                            path, str(tmp_path / "out"), None, {}, progress=lines.append)
    cut = truncated_rows(trainer.train_dataset, max(16, limit), tokenizer.eos_token_id)
    assert 0 < cut < 4
    assert any(f"{cut} of 4 rows are longer than max_length" in line for line in lines), lines
    assert truncated_rows(trainer.train_dataset, 4096, tokenizer.eos_token_id) == 0
    roomy = build_trainer(stage(tmp_path / "roomy", path, rows, kind, adapter="full", max_length=4096),
                          path, str(tmp_path / "out2"), None, {}, progress=lines.append)
    assert truncated_rows(roomy.train_dataset, 4096, tokenizer.eos_token_id) == 0


def test_stage_config_presets_and_errors():
    config = StageConfig(stage="dpo", pathway="pta", model="m", dataset="d.parquet")
    assert (config.lora_r, config.resolved_lora_alpha, config.lora_dropout) == (16, 32, 0.1)
    assert (config.resolved_learning_rate, config.lr_scheduler_type, config.warmup_steps, config.weight_decay) == \
        (2e-4, "cosine", 50, 0.05)
    assert StageConfig(stage="sft", pathway="fta", model="m", dataset="d",
                       adapter="full").resolved_learning_rate == 1e-5
    assert StageConfig(stage="sft", pathway="fta", model="m", dataset="d", lora_r=64).resolved_lora_alpha == 128
    assert StageConfig(stage="sft", pathway="fta", model="m", dataset="d").resolved_eval_mode == "command"
    assert StageConfig(stage="sft", pathway="pta", model="m", dataset="d").resolved_eval_mode == "flow"
    for bad, match in (({"lora_r": 0}, "greater than or equal to 1"), ({"lora_r": 512}, "less than or equal"),
                       ({"lora_r": 8}, "not a preset"), ({"loss_type": "ipo"}, "DPO loss"),
                       ({"pathway": "xx"}, "pta"), ({"epoch": 2}, "Extra inputs")):
        with pytest.raises(ValueError, match=match):
            StageConfig.model_validate({"stage": "sft", "pathway": "fta", "model": "m", "dataset": "d", **bad})
    assert StageConfig(stage="sft", pathway="fta", model="m", dataset="d", lora_r=8, lora_alpha=16).lora_r == 8


def test_lora_dropout_keys_only_the_stages_that_use_it():
    """TRL's DPOTrainer zeroes every dropout (LoRA's too), so a DPO/BoNBoN stage that differs
    only in ``lora_dropout`` is the same stage; SFT uses it, so there it is another stage."""
    def settings(stage: str, dropout: float) -> dict:
        return StageConfig(stage=stage, pathway="fta", model="m", dataset="d", lora_dropout=dropout).result_settings()

    assert settings("dpo", 0.1) == settings("dpo", 0.3) and settings("bonbon", 0.1) == settings("bonbon", 0.3)
    assert settings("sft", 0.1) != settings("sft", 0.3)


def test_the_tracker_is_not_part_of_a_stage_key(tmp_path, instruct):
    """report_to says where curves go, not what is trained: changing it retrains nothing."""
    from codealign.tasks.artifacts.checkpoints import fingerprint

    path, tokenizer = instruct
    data = write_parquet(toy_rows(tokenizer, 3, n=None), tmp_path / "sft.parquet")
    keys = {make_stage(StageConfig(stage="sft", pathway="fta", model="m", dataset=data, report_to=trackers),
                       fingerprint(path), check_dataset(data, "sft")).key
            for trackers in (["tensorboard"], [], ["mlflow", "wandb"])}
    assert len(keys) == 1
    with pytest.raises(ValueError, match="report_to"):
        StageConfig(stage="sft", pathway="fta", model="m", dataset="d", report_to=["neptune"])


def test_dataset_checks_name_the_file_and_problem(tmp_path, instruct):
    _, tokenizer = instruct
    rows = toy_rows(tokenizer, 3, n=None)
    plain = write_parquet(rows, tmp_path / "pairs.parquet")
    assert check_dataset(plain, "dpo").rows == 3
    with pytest.raises(DatasetError, match=r"pairs.parquet: a BoNBoN dataset needs the n .*: a column n, or the "
                                           "bonbon_n setting"):
        check_dataset(plain, "bonbon")
    assert check_dataset(plain, "bonbon", bonbon_n=4).n == 4  # the setting, where the data has no n
    no_completion = write_parquet([{k: v for k, v in r.items() if k != "completion"} for r in rows],
                                  tmp_path / "no-completion.parquet")
    with pytest.raises(DatasetError, match=r"no-completion.parquet: a sft dataset needs column\(s\) completion"):
        check_dataset(no_completion, "sft")
    twice = write_parquet([rows[0], rows[0]], tmp_path / "twice.parquet")
    with pytest.raises(DatasetError, match="instruction_id repeats"):
        check_dataset(twice, "sft")
    mixed = write_parquet([{**rows[0], "n": 8}, {**rows[1], "n": 4}], tmp_path / "mixed.parquet")
    with pytest.raises(DatasetError, match=r"one best-of-n size >= 2, found \[4, 8\]"):
        check_dataset(mixed, "bonbon")
    empty = write_parquet([{**rows[0], "chosen": ""}], tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match="row 0 .*'chosen'"):
        check_dataset(empty, "dpo")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="junk.parquet: not a parquet, JSONL or save_to_disk dataset"):
        check_dataset(str(tmp_path / "junk.parquet"), "sft")
    with pytest.raises(DatasetError, match="missing.parquet: no such dataset"):
        check_dataset(str(tmp_path / "missing.parquet"), "sft")
    assert check_dataset(write_parquet(toy_rows(tokenizer, 2), tmp_path / "bon.parquet"), "bonbon").n == 8


def test_plain_resume_reproduces_the_uninterrupted_run(tmp_path, instruct):
    """Stop after checkpoint-4 of 6, resume in a new trainer: optimizer, scheduler, RNG and data
    position come back, so the weights and the examples seen equal an uninterrupted run's."""
    from codealign.tasks.training.trainer import SEEN_FILE, build_trainer, train

    path, tokenizer = instruct
    spec = stage(tmp_path, path, toy_rows(tokenizer, 12), "dpo", lora_dropout=0.1)
    store = ArtifactStore(str(tmp_path / "store"))
    clean = build_trainer(spec, path, str(tmp_path / "clean"), store, {})
    train(clean)
    listed = store.list("units")
    exported = [k.rsplit("/", 1)[-1] for k in listed if "/checkpoints/" in k]
    assert exported == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert [k.rsplit("/", 1)[-1] for k in listed if "/adapters/" in k] == exported  # each LoRA checkpoint's adapter
    seen = json.loads((tmp_path / "clean" / "checkpoint-6" / SEEN_FILE).read_text())["examples"]
    assert Counter(seen) == Counter(r["instruction_id"] for r in toy_rows(tokenizer, 12))

    shutil.copytree(tmp_path / "clean" / "checkpoint-4", tmp_path / "killed-at-4")
    resumed = build_trainer(spec, path, str(tmp_path / "resumed"), None, {})
    train(resumed, str(tmp_path / "killed-at-4"))
    assert resumed.state.global_step == 6
    assert json.loads((tmp_path / "resumed" / "checkpoint-6" / SEEN_FILE).read_text())["examples"] == seen
    from safetensors.torch import load_file

    a = load_file(tmp_path / "clean" / "checkpoint-6" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoint-6" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(math.isclose(float((a[k] - b[k]).abs().max()), 0, abs_tol=1e-6) for k in a)
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # it trained


def test_train_command_rejects_bad_input_before_anything_starts(tmp_path, instruct):
    """Each bad input: exit 2, one line naming the file or flag, and no store written."""
    import subprocess
    import sys

    path, tokenizer = instruct
    pairs = write_parquet([{k: v for k, v in row.items() if k != "completion"}
                           for row in toy_rows(tokenizer, 2, n=None)],
                          tmp_path / "pairs.parquet")  # DPO pairs: no SFT completion, no n
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    store = tmp_path / "store"
    cases = [
        (["--stage", "sft", "--dataset", pairs], "pairs.parquet: a sft dataset needs column(s) completion"),
        (["--stage", "bonbon", "--dataset", pairs], "pairs.parquet: a BoNBoN dataset needs the n its best and "
                                                     "worst were drawn from"),
        (["--stage", "dpo", "--dataset", pairs, "--model", str(tmp_path / "no-weights")],
         "no-weights: no model weights"),
        (["--stage", "dpo", "--dataset", pairs, "--lora-r", "512"],
         "--lora-r: Input should be less than or equal to 256"),
        (["--stage", "dpo", "--dataset", pairs, "--lora-r", "8"], "--lora-r: Value error, 8 is not a preset"),
        (["--stage", "dpo", "--dataset", str(tmp_path / "nope.parquet")], "nope.parquet: no such dataset"),
    ]
    for args, message in cases:
        flags = {"--model": path, "--pathway": "fta", "--store": str(store)}
        for i in range(0, len(args), 2):
            flags[args[i]] = args[i + 1]
        result = subprocess.run([sys.executable, "-m", "codealign", "train", *(x for kv in flags.items() for x in kv)],
                                capture_output=True, text=True)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (message, result.stderr)
        assert not store.exists()


def test_an_evaluation_joins_its_stage_tracker_runs_and_a_tracker_that_fails_only_warns(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.training import tracking

    store = ArtifactStore(str(tmp_path / "store"))
    ids = {"tensorboard": {"logdir": store.uri("units/st/tracking/tensorboard")},
           "mlflow": {"run_id": "no-such-run", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    store.put_json("units/st/tracking/runs.json", ids, ArtifactMeta("tracking-runs", {}))
    rows = [{"checkpoint_uri": store.uri("units/st/checkpoints/checkpoint-4"), "benchmark": "toy", "mode": "flow",
             "unit": "u1", "pass@1": 0.5, "pass@2": 0.75},
            {"checkpoint_uri": "file:///elsewhere/checkpoint-4", "benchmark": "toy", "mode": "flow", "unit": "u2",
             "pass@1": 1.0}]
    warnings: list[str] = []
    assert tracking.log_evaluation(store, rows, "e1", {}, warnings.append) == 2  # TensorBoard took both values
    assert len(warnings) == 1 and warnings[0].startswith("tracking: mlflow did not take the evaluation of stage st")
    assert tracking.log_evaluation(store, rows, "e2", {}, warnings.append) == 0  # a unit is sent once
    [events] = [k for k in store.list("units/st/tracking/tensorboard") if ".eval-e1-" in k]
    accumulator = EventAccumulator(store.path(events))
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("eval/toy/flow/pass@2")] == [(4, 0.75)]
    assert tracking.stage_checkpoint(store, store.uri("units/st/checkpoints/checkpoint-12")) == ("st", 12)
    assert tracking.stage_checkpoint(store, store.uri("units/st/checkpoints")) is None


def test_conversational_sft_trains_on_the_assistant_turns_only(tmp_path, instruct):
    """TRL's conversational format (`messages`), from a JSONL file without instruction ids: the
    toy-instruct chat template marks the assistant turns ({% generation %}), so the loss is on
    them only; two optimizer steps train."""
    from codealign.tasks.generation.prompts import fenced
    from codealign.tasks.toy.families import toy_tasks
    from codealign.tasks.training.trainer import build_trainer, train

    path, tokenizer = instruct
    rows = [{"messages": [{"role": "user", "content": t.instruction},
                          {"role": "assistant", "content": fenced(t.source)}]} for t in toy_tasks("train", 10)[:4]]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    checked = check_dataset(str(data), "sft")
    assert checked.conversational and checked.columns == ("messages",) and checked.ids == "prompt:sha256"
    config = StageConfig(stage="sft", pathway="fta", model=path, dataset=str(data), store=str(tmp_path / "store"),
                         per_device_train_batch_size=2, save_steps=2, warmup_steps=0, max_length=256, max_steps=2)
    spec = make_stage(config, fingerprint(path), checked)
    trainer = build_trainer(spec, path, str(tmp_path / "out"), None, {})
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    learned = [tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
               for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist())]
    for text, row in zip(learned, rows[:2]):
        assert row["messages"][1]["content"].strip() in text and row["messages"][0]["content"] not in text
    train(trainer)
    assert trainer.state.global_step == 2
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
