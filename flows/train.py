"""Prefect flow ``train``: one training stage (SFT, DPO or BoNBoN) on Ray Train, keyed by content.

    check dataset ─► fingerprint + validate the starting model ─► stage key ─► manifest
    (all before any worker starts; a bad input fails here, naming the file and field)
    if the stage is not complete in the store:
        train-stage: TorchTrainer(ScalingConfig(workers, use_gpu)), TRL in every worker,
            checkpoint-<step> merged into the store with lineage; Ray Train keeps the
            optimizer/scheduler/RNG/data-position state in units/<key>/train-state and
            resumes from it (after a worker failure, a kill, a resume or a new run)
        sft only: degradation check = evaluate-checkpoints (start vs final) on a held-out benchmark
        stage.json
    ─► results.json + status.json

The worker function and everything it builds are plain Python in tasks/training/.
"""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import ray
from prefect import flow, get_run_logger
from prefect_ray import RayTaskRunner

from codealign.flows import runtime
from codealign.flows.evaluate_checkpoints import evaluate_checkpoints
from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.checkpoint_cache import local_copy
from codealign.tasks.artifacts.checkpoints import validate
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.runs import Manifest
from codealign.tasks.artifacts.store import ArtifactStore, local_path
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.generation.models import resolve_model
from codealign.tasks.plugins import plugin_names
from codealign.tasks.training import publish, stages, tracking
from codealign.tasks.training.config import StageConfig
from codealign.tasks.training.data import check_dataset
from codealign.tasks.training.stages import StageRecord, StageSpec
from codealign.tasks.training.trainer import SEEN_FILE, build_trainer, train

FLOW_NAME = "train"


def train_worker(args: dict[str, Any]) -> None:
    """One Ray Train worker: build the stage's TRL trainer, report its checkpoints to Ray Train,
    resume from Ray Train's latest checkpoint if there is one."""
    import ray.train
    from ray.train.huggingface.transformers import (
        RayTrainReportCallback,
        prepare_trainer,
    )

    spec: StageSpec = args["spec"]
    rank = ray.train.get_context().get_world_rank()
    if not spec.config.use_gpu:
        import torch

        torch.set_num_threads(spec.config.cpus_per_worker)  # the cores this worker reserved, no more or less
    start = local_copy(spec.model)
    if not os.path.isdir(start):  # a toy model or hub id built/cached on this node, not copied
        start = resolve_model(spec.config.model)
    queue = args["progress"]
    output_dir = tempfile.mkdtemp(prefix=f"codealign-train-{spec.key[:8]}-rank{rank}-")
    trainer = build_trainer(spec, start, output_dir, ArtifactStore(spec.config.store), args["producer"],
                            progress=queue.put)  # step lines come from rank 0 only
    trainer.add_callback(RayTrainReportCallback())
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else nullcontext(None) as state:
        resume = os.path.join(state, RayTrainReportCallback.CHECKPOINT_NAME) if state else None
        if resume and rank == 0:
            queue.put(f"{spec.config.stage}: resuming from {checkpoint.path}")
        train(trainer, resume)
    if rank == 0:  # the curves into the store, the trackers' run ids beside them
        tracking.publish(ArtifactStore(spec.config.store), spec.key, output_dir, trainer.tracker_ids.ids,
                         args["producer"])


def fit_stage(spec: StageSpec, made_by: dict[str, Any], log: Any) -> dict[str, Any]:
    """Run the stage on Ray Train (from the latest train-state checkpoint, if any); its
    progress lines go to ``log``.  Returns the last metrics and the examples trained on."""
    import pyarrow.fs
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    c = spec.config
    store = ArtifactStore(c.store)
    state_uri = store.uri(spec.artifact(stages.TRAIN_STATE))
    if (path := local_path(state_uri)) is not None:
        where: dict[str, Any] = {"storage_path": os.path.dirname(path)}
    else:
        where = {"storage_path": os.path.dirname(store.path(state_uri)),
                 "storage_filesystem": pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(store.fs))}
    queue = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec, "producer": made_by, "progress": queue},
        scaling_config=ScalingConfig(num_workers=c.workers, use_gpu=c.use_gpu,
                                     resources_per_worker={"CPU": c.cpus_per_worker,
                                                           **({"GPU": 1} if c.use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo"),
        run_config=RunConfig(name=stages.TRAIN_STATE, **where,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             # a crashed worker costs the steps since the last checkpoint, not the stage
                             failure_config=FailureConfig(max_failures=2)),
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the task's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive() or not queue.empty():
        try:
            log(queue.get(timeout=1))
        except Empty:
            pass
    ray.kill(queue.actor)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    seen: list[str] = []
    if result.checkpoint:
        import json

        with result.checkpoint.as_directory() as d:
            seen_file = os.path.join(d, "checkpoint", SEEN_FILE)
            if os.path.exists(seen_file):
                with open(seen_file) as f:
                    seen = json.load(f)["examples"]
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float, str))}
    return {"metrics": metrics, "examples_seen": seen}


@runtime.ray_task("train-stage")
def train_task(spec: StageSpec) -> dict[str, Any]:
    logger = get_run_logger()
    return fit_stage(spec, runtime.producer(FLOW_NAME, "train-stage"), logger.info)


def degradation_benchmarks(config: StageConfig) -> list[str]:
    if config.degradation_benchmarks:
        return config.degradation_benchmarks
    return ["toy"] if config.model in plugin_names("models") or "toy-" in config.model else ["humaneval"]


def check_degradation(spec: StageSpec, final: dict[str, Any], run_id: str) -> stages.Degradation:
    """Paper 003's signal: the SFT model against its starting model, greedy pass@1 on held-out
    problems (evaluate-checkpoints' units: the starting model's are shared by every stage)."""
    c = spec.config
    benchmarks = degradation_benchmarks(c)
    config = CheckpointEvalConfig(checkpoints=[spec.model.uri, final["uri"]], benchmarks=benchmarks,
                                  modes=[c.resolved_eval_mode], store=c.store, ray_address=c.ray_address,
                                  sampling={"n": 1, "temperature": 0.0, "max_tokens": c.eval_max_tokens},
                                  ks=[1], limit=c.degradation_limit)
    result = evaluate_checkpoints(config=config, run_id=f"{run_id}-degradation")
    rows = runs.read_results(ArtifactStore(c.store), result["run_id"])

    def score(sha256: str) -> float:
        mine = [r["pass@1"] for r in rows if r["checkpoint_sha256"] == sha256]
        return sum(mine) / len(mine)

    return stages.degradation(score(spec.model.sha256), score(final["sha256"]), c, benchmarks)


@flow(name=FLOW_NAME, task_runner=RayTaskRunner(), persist_result=True, log_prints=True)
def train_flow(config: StageConfig, run_id: str | None = None) -> dict[str, Any]:
    """Train one stage unless an identical stage (same model and data content, same settings)
    is complete in the store; then, after SFT, check it for degradation."""
    logger, store, run_id, made_by, status = runtime.open_run(FLOW_NAME, config, run_id)
    data = check_dataset(config.dataset, config.stage, config.bonbon_n)
    if config.push_to_hub:
        publish.check_push_target(config.push_to_hub)  # offline or not logged in: now, not after training
    with runtime.ray_options():
        model = runtime.fingerprint_task.submit(resolve_model(config.model)).result()
    validate(model.uri)  # no weights, a corrupt file: fail now, naming it, before any worker starts
    spec = stages.make_stage(config, model, data)
    manifest = Manifest(run_id, FLOW_NAME, config.model_dump(mode="json"), [spec.as_item()])
    runs.write_manifest(store, manifest, (InputRef(model.uri, model.sha256), InputRef(data.uri, data.sha256)), made_by)
    runs.write_status(store, status, made_by)
    record = stages.read_record(store, spec.key)
    if record is not None:
        logger.info(f"run {run_id}: stage {spec.key} ({spec.label()}) is already trained; nothing to do")
    else:
        logger.info(f"run {run_id}: stage {spec.key} ({spec.label()}): {data.rows} examples, "
                    f"{config.workers} worker(s), {'GPU' if config.use_gpu else 'CPU'}")
        # The task only waits on Ray Train's workers: it holds no CPU of its own.
        with runtime.ray_options(num_cpus=0):
            trained = train_task.submit(spec).result()
        checkpoints = stages.stage_checkpoints(store, spec)
        degradation = None
        if config.stage == "sft":
            degradation = check_degradation(spec, checkpoints[-1], run_id)
            logger.info(f"degradation check: start {degradation.start_score:.3f}, sft {degradation.sft_score:.3f}, "
                        f"threshold {degradation.threshold}: {'DEGRADED' if degradation.degraded else 'ok'}")
        seen = trained["examples_seen"]
        record = StageRecord(spec.key, config.stage, config.pathway, {"uri": model.uri, "sha256": model.sha256},
                             {"uri": data.uri, "sha256": data.sha256, "rows": data.rows, "n": data.n}, checkpoints,
                             checkpoints[-1]["uri"], {**trained["metrics"], "examples_seen": len(seen),
                                                      "distinct_examples_seen": len(set(seen))},
                             asdict(degradation) if degradation else None, tracking.read_run_ids(store, spec.key))
        stages.write_record(store, record, made_by)
    record_ref = store.ref_if_exists(spec.artifact(stages.RECORD))
    card_key = spec.artifact(publish.MODEL_CARD)
    shared = publish.published_folder(store, spec, record)
    card = publish.model_card(spec, record, shared)
    if not store.exists(card_key):  # a new artifact of the stage; the stored ones are never modified
        store.put(card_key, card.encode(), ArtifactMeta("model-card", made_by, (InputRef(record_ref.uri,
                                                                                         record_ref.sha256),)))
    if config.push_to_hub:
        logger.info(f"pushed {shared} to {config.push_to_hub}: {publish.push(config.push_to_hub, shared, card)}")
    row = {"stage_key": spec.key, "stage": record.stage, "pathway": record.pathway, "model": record.model["uri"],
           "dataset": record.dataset["uri"], "final_checkpoint": record.final_checkpoint,
           "checkpoints": len(record.checkpoints), "degraded": (record.degradation or {}).get("degraded"),
           "last_loss": record.metrics.get("loss"), "examples_seen": record.metrics.get("examples_seen"),
           "truncated_rows": record.metrics.get("truncated_rows")}
    return runtime.end_run(store, status, [row], (InputRef(record_ref.uri, record_ref.sha256),), made_by)
