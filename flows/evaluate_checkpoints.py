"""Prefect flow ``evaluate-checkpoints``: every checkpoint × benchmark × mode, on Ray, resumable.

    discover checkpoints ─► fingerprint (Ray tasks) ─► units ─► manifest
        for each (checkpoint, mode) with units not complete in the store:
            sample-units (on the vLLM sampler actor of its checkpoint; a prompt that several
            benchmarks share is sampled once) ──► per unit: execute-unit ──► score-unit
                                                                 (Prefect tasks on Ray)
        ─► results.json + status.json; the flow fails if any unit failed

The stages are plain functions (tasks/evaluation/units.py); each stage's output is an artifact
in the store, so whatever completed before a crash, a failure or a kill is never redone.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from codealign.flows import runtime
from codealign.flows.samplers import SamplerQueue, run_on, start_samplers
from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.checkpoints import discover
from codealign.tasks.artifacts.store import ArtifactRef
from codealign.tasks.evaluation import units as ev
from codealign.tasks.evaluation.units import CheckpointEvalConfig, Unit
from codealign.tasks.training import tracking

FLOW_NAME = "evaluate-checkpoints"


@runtime.ray_task("sample-units")
def sample_task(units: list[Unit], config: CheckpointEvalConfig, sampler: Any) -> dict[str, ArtifactRef]:
    return run_on(sampler, ev.sample_units, units, config, producer=runtime.producer(FLOW_NAME, "sample-units"))


@runtime.ray_task("execute-unit")
def execute_task(unit: Unit, config: CheckpointEvalConfig, samples: dict[str, ArtifactRef]) -> ArtifactRef:
    return ev.execute_unit(unit, config, samples[unit.key], runtime.producer(FLOW_NAME, "execute-unit"))


@runtime.ray_task("score-unit")
def score_task(unit: Unit, config: CheckpointEvalConfig, verdicts: ArtifactRef) -> ArtifactRef:
    return ev.score_unit(unit, config, verdicts, runtime.producer(FLOW_NAME, "score-unit"))


@flow(name=FLOW_NAME, task_runner=RayTaskRunner(), persist_result=True, log_prints=True)
def evaluate_checkpoints(config: CheckpointEvalConfig, run_id: str | None = None) -> dict[str, Any]:
    """Evaluate every checkpoint on every benchmark and mode; only units not already complete
    in the store are run.  Fails (after recording them) if any unit failed."""
    logger, store, run_id, made_by, status = runtime.open_run(FLOW_NAME, config, run_id)

    with runtime.ray_options():
        uris = discover(config.checkpoints)
        prints = [(uri, runtime.fingerprint_task.submit(uri)) for uri in uris]
        samplers = start_samplers(len(uris), config.engine.tensor_parallel_size)  # warm up while hashing
        checkpoints = []
        for uri, future in prints:
            future.wait()
            if future.state.is_completed():
                checkpoints.append(future.result())
            else:
                status.bad_inputs[uri] = future.state.message or "fingerprint failed"
        units = ev.make_units(config, checkpoints)
        units += ev.kept_units(ev.recorded_units(store, run_id), units)
        ev.write_manifest(store, run_id, config, units, made_by)
        runs.write_status(store, status, made_by)
        pending = [u for u in units if not ev.is_complete(store, u)]
        logger.info(f"run {run_id}: {len(checkpoints)} checkpoints, {len(units)} units, {len(pending)} to run")

        # An execute task reserves as many CPUs as its sandbox pool has workers.
        cpus = runtime.sandbox_cpus(config.workers)
        execute_config = config.model_copy(update={"workers": cpus})
        queue = SamplerQueue(samplers, [u.checkpoint.sha256 for u in pending])
        try:
            chains = []
            for group in ev.sampling_groups(pending):  # sample once per checkpoint and mode, judge per unit
                with remote_options(num_cpus=0):  # it only waits on its sampler
                    samples = queue.submit(group[0].checkpoint.sha256, lambda sampler, after, group=group:
                                           sample_task.submit(group, config, sampler, wait_for=after))
                for unit in group:
                    with remote_options(num_cpus=cpus):
                        verdicts = execute_task.submit(unit, execute_config, samples)
                    scores = score_task.submit(unit, config, verdicts)
                    chains.append((unit.key, (("sample", samples), ("execute", verdicts), ("score", scores))))
            runtime.record_failures(status, chains)
        finally:
            queue.stop()

    rows, scored = ev.result_rows(store, units)
    # each trained checkpoint's pass@k onto its stage's tracker runs, at the checkpoint's step
    tracking.log_evaluation(store, rows, run_id, made_by, logger.warning)
    return runtime.end_run(store, status, rows, scored, made_by)
