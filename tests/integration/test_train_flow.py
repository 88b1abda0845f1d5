"""The train flow for real: Prefect server, Ray Train with two CPU workers (gloo), TRL, the
toy models, datasets made by generate-preferences.  SFT -> DPO and BoNBoN along the FTA
pathway; an identical stage is not trained twice; DPO raises the implicit reward margin;
evaluate-checkpoints runs on the training output as it is; lineage from an evaluation result
back to the training data and the model that sampled it; SIGKILL mid-stage and resume."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from servers import sigkill_when

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.training.config import StageConfig, bonbon_default_beta
from codealign.tasks.training.data import read_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def stage_config(store: ArtifactStore, stage: str, model: str, dataset: str, address: str, **overrides) -> StageConfig:
    base = dict(stage=stage, pathway="fta", model=model, dataset=dataset, store=store.root, workers=2,
                per_device_train_batch_size=2, save_steps=2, warmup_steps=0, max_length=384, degradation_limit=12,
                eval_max_tokens=160, ray_address=address)
    return StageConfig.model_validate({**base, **overrides})


def trained(store: ArtifactStore, run_id: str) -> dict:
    [row] = runs.read_results(store, run_id)
    return {**row, "record": store.get_json(layout.unit_artifact(row["stage_key"], "stage.json"))}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """An MLflow tracking store (sqlite) the DPO stage reports to, named as users do: through
    MLFLOW_TRACKING_URI in the environment (forwarded to the Ray workers)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="module")
def fta_chain(pathway_runs, prefect_api, ray_cluster, mlflow_store):
    """toy-instruct -> SFT on the FTA run's sft data; from the SFT model, DPO (to TensorBoard
    and MLflow) and BoNBoN (to TensorBoard, the default)."""
    from codealign.flows import registry

    store, _ = pathway_runs[2]["fta"]
    data = {name: store.uri(layout.run_dataset("fta", f"{name}.parquet")) for name in ("sft", "dpo", "bon")}
    address = ray_cluster["address"]
    registry.run("train", stage_config(store, "sft", "toy-instruct", data["sft"], address, num_train_epochs=2), "sft")
    sft = trained(store, "sft")
    registry.run("train", stage_config(store, "dpo", sft["final_checkpoint"], data["dpo"], address, num_train_epochs=3,
                                       report_to=["tensorboard", "mlflow"]), "dpo")
    registry.run("train", stage_config(store, "bonbon", sft["final_checkpoint"], data["bon"], address,
                                       num_train_epochs=3), "bonbon")
    return store, data, {name: trained(store, name) for name in ("sft", "dpo", "bonbon")}


def test_each_stage_trains_on_two_workers_and_records_its_checkpoints(fta_chain):
    store, data, stages = fta_chain
    for name, dataset in (("sft", "sft"), ("dpo", "dpo"), ("bonbon", "bon")):
        record, rows = stages[name]["record"], len(read_rows(data[dataset]))
        epochs = 2 if name == "sft" else 3
        steps = -(-rows // 4) * epochs  # batch 2 on each of 2 workers
        assert [c["step"] for c in record["checkpoints"]][-1] == steps, name
        assert record["final_checkpoint"] == record["checkpoints"][-1]["uri"]
        seen = record["metrics"]["examples_seen"]
        # every example, every epoch; a last batch short of 2 x 2 is padded with repeats (even batches)
        assert rows * epochs <= seen <= steps * 4 and record["metrics"]["distinct_examples_seen"] == rows, name
        assert record["metrics"]["truncated_rows"] == 0, name  # counted, and max_length fits the toy data
        for checkpoint in record["checkpoints"]:  # merged full models: weights and tokenizer, no adapter
            files = set(os.listdir(store.path(checkpoint["uri"])))
            assert ({"config.json", "model.safetensors", "tokenizer.json"} <= files
                    and "adapter_config.json" not in files)
    degradation = stages["sft"]["record"]["degradation"]
    assert set(degradation) == {"degraded", "start_score", "sft_score", "threshold", "benchmarks", "mode"}
    assert degradation["degraded"] == (degradation["sft_score"] < degradation["start_score"] - 0.02)
    assert (degradation["benchmarks"], degradation["mode"]) == (["toy"], "command")
    assert stages["dpo"]["record"]["degradation"] is None
    meta = store.meta(stages["bonbon"]["final_checkpoint"])
    assert meta.params["bonbon_beta"] == pytest.approx(bonbon_default_beta(8))
    assert stages["bonbon"]["record"]["dataset"]["n"] == 8


def test_each_lora_checkpoint_exports_its_adapter_beside_it_and_merges_back_through_model(fta_chain):
    """The adapter alone (MBs), beside the merged checkpoint and not in it; its base is the model
    the user named (toy-instruct; the SFT checkpoint for DPO), not a worker's copy; the stage's
    model card names base, data and scores; `--model ADAPTER_DIR` merges the adapter into that
    base: the same weights as the stored merged checkpoint."""
    import json

    from safetensors.torch import load_file

    from codealign.tasks.generation.models import ADAPTER_RECORD, resolve_model

    store, _, stages = fta_chain
    adapters = {}
    for name in ("sft", "dpo"):
        record = stages[name]["record"]
        for checkpoint in record["checkpoints"]:
            key = layout.unit_artifact(stages[name]["stage_key"], f"adapters/checkpoint-{checkpoint['step']}")
            assert set(os.listdir(store.path(key))) == {"adapter_config.json", "adapter_model.safetensors"}
            assert store.meta(key).kind == "adapter"
        adapters[name] = store.path(key)
    base_of = {n: json.loads(Path(a, "adapter_config.json").read_text())["base_model_name_or_path"]
               for n, a in adapters.items()}
    assert base_of == {"sft": "toy-instruct", "dpo": stages["sft"]["final_checkpoint"]}

    card = store.get(layout.unit_artifact(stages["sft"]["stage_key"], "README.md")).decode()
    degradation = stages["sft"]["record"]["degradation"]
    assert 'base_model: "toy-instruct"' in card and 'library_name: "peft"' in card
    assert f"starting model {degradation['start_score']:.3f}, this model {degradation['sft_score']:.3f}" in card
    assert stages["sft"]["record"]["final_checkpoint"] in card

    merged = resolve_model(adapters["sft"])
    assert json.loads(Path(merged, ADAPTER_RECORD).read_text())["base"] == "toy-instruct"
    ours, stored = (load_file(str(Path(d, "model.safetensors")))
                    for d in (merged, store.path(stages["sft"]["final_checkpoint"])))
    assert ours.keys() == stored.keys() and all((ours[k] == stored[k]).all() for k in ours)
    # the same weights: what evaluate-checkpoints measured of the merged checkpoint is what every
    # `--model ADAPTER_DIR` command (they all resolve references through resolve_model) evaluates


def test_an_identical_stage_is_not_trained_twice(fta_chain, ray_cluster):
    from codealign.flows import registry

    store, data, stages = fta_chain
    record_key = layout.unit_artifact(stages["dpo"]["stage_key"], "stage.json")
    before = store.meta(record_key)
    registry.run("train", stage_config(store, "dpo", stages["sft"]["final_checkpoint"], data["dpo"],
                                       ray_cluster["address"], num_train_epochs=3, degradation_limit=3),
                 "dpo-again")  # not a weight-changing setting
    assert trained(store, "dpo-again")["stage_key"] == stages["dpo"]["stage_key"]
    assert store.meta(record_key) == before


def test_dpo_raises_the_reward_margin_and_chosen_over_rejected_accuracy(fta_chain):
    from preference_metrics import preference_metrics

    store, data, stages = fta_chain
    pairs = read_rows(data["dpo"])
    reference = store.path(stages["sft"]["final_checkpoint"])
    after = preference_metrics(store.path(stages["dpo"]["final_checkpoint"]), reference, pairs)
    assert after.margin > 0.5 and after.accuracy > 0.7, after
    untrained = preference_metrics(reference, reference, pairs)
    assert untrained.margin == 0 and untrained.accuracy == 0


def test_evaluate_checkpoints_runs_on_the_training_output_and_lineage_reaches_the_data(fta_chain, ray_cluster):
    from codealign.flows import registry
    from codealign.tasks.artifacts.lineage import lineage_tree
    from codealign.tasks.evaluation.units import CheckpointEvalConfig
    from codealign.tasks.preferences.generate import run_inputs

    store, data, stages = fta_chain
    output = store.path(store.uri(layout.unit_artifact(stages["dpo"]["stage_key"], "checkpoints")))
    config = CheckpointEvalConfig(checkpoints=[output], benchmarks=["toy"], store=store.root, ks=[1], limit=6,
                                  sampling={"n": 1, "temperature": 0, "max_tokens": 160},
                                  engine={"max_model_len": 512, "enforce_eager": True},
                                  ray_address=ray_cluster["address"])
    registry.run("evaluate-checkpoints", config, "eval-dpo")
    rows = runs.read_results(store, "eval-dpo")
    steps = [c["step"] for c in stages["dpo"]["record"]["checkpoints"]]
    assert [r["step"] for r in rows] == steps and all(0 <= r["pass@1"] <= 1 for r in rows)

    scores = store.uri(layout.unit_artifact(rows[-1]["unit"], "scores.json"))
    kinds: list[tuple[str, str]] = []

    def walk(node, depth=0):
        kinds.append((node.kind, node.uri))
        for child in node.inputs:
            walk(child, depth + 1)

    walk(lineage_tree(store, scores))
    uris = [uri for _, uri in kinds]
    assert stages["dpo"]["final_checkpoint"] in uris  # the evaluated checkpoint
    assert data["dpo"] in uris  # its training data
    assert stages["sft"]["final_checkpoint"] in uris  # the model it started from...
    assert data["sft"] in uris  # ...and that one's training data
    assert run_inputs(store, "fta").model.uri in uris  # the model that sampled the data
    checkpoint = store.meta(stages["dpo"]["final_checkpoint"])
    assert checkpoint.kind == "checkpoint" and checkpoint.code["commit"]
    assert checkpoint.params["stage"]["stage"] == "dpo" and checkpoint.params["stage_key"] == stages["dpo"]["stage_key"]


def test_sigkill_mid_stage_then_resume_sees_every_example_once(tmp_path, toy_model_paths, prefect_api, ray_cluster):
    """Killed after its first checkpoints, the stage resumes from Ray Train's latest one: across
    both runs every example of the epoch is trained on exactly once."""
    from transformers import AutoTokenizer

    from codealign.flows import registry
    from codealign.tasks.generation.prompts import chat_instruction_prompt, fenced
    from codealign.tasks.toy.families import toy_tasks
    from codealign.tasks.training.data import ID_COLUMN

    tokenizer = AutoTokenizer.from_pretrained(str(toy_model_paths["toy-instruct"]))
    rows = [{ID_COLUMN: t.identity, "prompt": chat_instruction_prompt(tokenizer, t.instruction, []),
             "completion": fenced(t.source)} for t in toy_tasks("train", 40)[:80]]
    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(str(tmp_path / "sft.parquet"))
    store_dir = tmp_path / "store"
    command = [sys.executable, "-m", "codealign", "train", "--stage", "sft", "--pathway", "fta", "--model",
               "toy-instruct", "--dataset", str(tmp_path / "sft.parquet"), "--store", str(store_dir), "--workers", "2",
               "--per-device-train-batch-size", "1", "--save-steps", "5", "--warmup-steps", "0", "--max-length", "384",
               "--degradation-limit", "4", "--eval-max-tokens", "120", "--ray-address", ray_cluster["address"],
               "--run-id", "killed"]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    sigkill_when(command, env, REPO, lambda: len(list(store_dir.glob("units/*/train-state/checkpoint_*"))) >= 2,
                 "checkpoint")
    store = ArtifactStore(str(store_dir))
    assert runs.summarize(store, "killed").complete == 0
    exported = {k: store.meta(k) for k in store.list("units") if "/checkpoints/" in k}
    assert exported and max(int(k.rsplit("-", 1)[1]) for k in exported) < 40, "killed mid-stage"

    registry.resume(store.root, "killed", ray_cluster["address"])
    record = trained(store, "killed")["record"]
    assert record["checkpoints"][-1]["step"] == 40  # 80 examples, 1 on each of 2 workers
    final = store.path(record["final_checkpoint"])
    assert os.path.isdir(final)
    state = sorted(store_dir.glob("units/*/train-state/checkpoint_*/checkpoint/examples_seen.json"))[-1]
    import json

    seen = json.loads(state.read_text())["examples"]
    assert Counter(seen) == Counter(r[ID_COLUMN] for r in rows)  # each exactly once: none skipped or repeated
    assert record["metrics"]["examples_seen"] == 80 == record["metrics"]["distinct_examples_seen"]
    for key, meta in exported.items():  # checkpoints exported before the kill are kept as they were
        assert store.meta(key) == meta, key


def test_curves_reach_tensorboard_and_mlflow_and_each_evaluation_joins_them_at_its_step(fta_chain, mlflow_store):
    """After the evaluation above: the DPO stage's event files are in the store and TensorBoard's
    own reader reads loss, learning rate and reward margins/accuracies per step, and pass@1 at
    each checkpoint's step; the MLflow run holds the training params and the same curves; its
    id is in every checkpoint's lineage and the stage record."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from codealign.tasks.training import tracking

    store, _, stages = fta_chain
    record = stages["dpo"]["record"]
    steps = [c["step"] for c in record["checkpoints"]]
    logdir = store.path(record["tracking"]["tensorboard"]["logdir"])
    scalars: dict[str, list] = {}
    for name in sorted(os.listdir(logdir)):
        if ".tfevents." in name and not name.endswith(".meta.json"):
            events = EventAccumulator(os.path.join(logdir, name))
            events.Reload()
            for tag in events.Tags()["scalars"]:
                scalars.setdefault(tag, []).extend(events.Scalars(tag))
    assert {"train/loss", "train/learning_rate", "train/rewards/margins", "train/rewards/accuracies"} <= set(scalars)
    assert [e.step for e in scalars["train/loss"]] == list(range(1, steps[-1] + 1))  # every logging step
    rows = {r["step"]: r["pass@1"] for r in runs.read_results(store, "eval-dpo")}
    assert [(e.step, round(e.value, 6)) for e in scalars["eval/toy/command/pass@1"]] == \
        [(step, round(rows[step], 6)) for step in steps]

    ids = record["tracking"]["mlflow"]
    assert ids["tracking_uri"] == mlflow_store
    client = MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(ids["run_id"])
    assert float(run.data.params["learning_rate"]) == pytest.approx(2e-4) and run.data.params["beta"] == "0.1"
    assert len(client.get_metric_history(ids["run_id"], "loss")) == steps[-1]
    assert {"rewards/margins", "rewards/accuracies"} <= set(run.data.metrics)
    evaluated = client.get_metric_history(ids["run_id"], "eval/toy/command/pass_at_1")
    assert sorted((m.step, round(m.value, 6)) for m in evaluated) == [(s, round(rows[s], 6)) for s in steps]
    for checkpoint in record["checkpoints"]:  # the tracker's run in each checkpoint's lineage
        assert store.meta(checkpoint["uri"]).params["tracking"]["mlflow"]["run_id"] == ids["run_id"]
    assert tracking.read_run_ids(store, stages["bonbon"]["stage_key"]).keys() == {"tensorboard"}  # the default
