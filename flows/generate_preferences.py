"""Prefect flow ``generate-preferences``: n responses per instruction, executed, gated, turned
into SFT / DPO / BoNBoN / non-functional datasets — on Ray, resumable by shard.

    resolve model ─► fingerprint ─► load source ─► shards ─► manifest
        for each shard not complete in the store:
            sample-shard ──► judge-shard               (Prefect tasks on Ray)
            (on the vLLM sampler of the model)
        ─► build-datasets: gates, parquet datasets, stats.json, report.md/png
        ─► results.json + status.json; the flow fails if any shard failed

The stages are plain functions (tasks/preferences/generate.py); each writes an artifact, so
whatever completed before a crash, failure or kill is never redone.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from codealign.flows import runtime
from codealign.flows.samplers import SamplerQueue, run_on, start_samplers
from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.lineage import InputRef
from codealign.tasks.artifacts.store import ArtifactRef, ArtifactStore
from codealign.tasks.generation.models import resolve_model
from codealign.tasks.preferences import generate as gp
from codealign.tasks.preferences.generate import GenerateConfig, RunInputs, Shard

FLOW_NAME = "generate-preferences"


@runtime.ray_task("sample-shard")
def sample_task(shard: Shard, inputs: RunInputs, sampler: Any) -> ArtifactRef:
    return run_on(sampler, gp.sample_shard, shard, inputs.config, inputs.model, inputs.source, inputs.judge,
                  producer=runtime.producer(FLOW_NAME, "sample-shard"))


@runtime.ray_task("judge-shard")
def judge_task(shard: Shard, config: GenerateConfig, samples: ArtifactRef) -> ArtifactRef:
    return gp.judge_shard(shard, config, samples, runtime.producer(FLOW_NAME, "judge-shard"))


@runtime.ray_task("build-datasets")
def build_task(run_id: str, inputs: RunInputs) -> list[dict[str, Any]]:
    return gp.build_run_datasets(ArtifactStore(inputs.config.store), run_id, inputs.config, inputs.model,
                                 inputs.source, inputs.shards, runtime.producer(FLOW_NAME, "build-datasets"))


@flow(name=FLOW_NAME, task_runner=RayTaskRunner(), persist_result=True, log_prints=True)
def generate_preferences(config: GenerateConfig, run_id: str | None = None) -> dict[str, Any]:
    """Sample, execute and gate responses shard by shard (only shards not already complete in
    the store), then build the datasets.  Fails (after recording them) if any shard failed."""
    logger, store, run_id, made_by, status = runtime.open_run(FLOW_NAME, config, run_id)

    with runtime.ray_options():
        model_future = runtime.fingerprint_task.submit(resolve_model(config.model))
        judge_future = (runtime.fingerprint_task.submit(resolve_model(config.judge_model))
                        if config.judge_model else None)
        source = gp.load_checked_source(config)
        samplers = start_samplers(1, config.engine.tensor_parallel_size)  # warm up while hashing
        model, judge = model_future.result(), judge_future.result() if judge_future else None
        shards = gp.make_shards(config, model, source, judge)
        inputs = RunInputs(config, model, gp.source_ref(config, source), shards, judge)
        gp.write_manifest(store, run_id, inputs, made_by)
        runs.write_status(store, status, made_by)
        pending = [s for s in shards if not gp.is_complete(store, s)]
        logger.info(f"run {run_id}: {len(source.instructions)} instructions from {source.name}, "
                    f"{len(shards)} shards, {len(pending)} to run")
        cpus = runtime.sandbox_cpus(config.workers)
        judge_config = config.model_copy(update={"workers": cpus})
        queue = SamplerQueue(samplers, [model.sha256] * len(pending))
        try:
            chains = []
            for shard in pending:
                with remote_options(num_cpus=0):  # it only waits on its sampler
                    samples = queue.submit(model.sha256, lambda sampler, after, shard=shard:
                                           sample_task.submit(shard, inputs, sampler, wait_for=after))
                with remote_options(num_cpus=cpus):  # as many CPUs as its sandbox pool has workers
                    judged = judge_task.submit(shard, judge_config, samples)
                chains.append((shard.key, (("sample", samples), ("judge", judged))))
            runtime.record_failures(status, chains)
        finally:
            queue.stop()
        rows: list[dict[str, Any]] = []
        if not status.failed:
            rows = build_task.submit(run_id, inputs).result()

    return runtime.end_run(store, status, rows, tuple(InputRef(r["uri"], r["sha256"]) for r in rows), made_by)
