"""Prefect flow ``evaluate-checkpoints``: every checkpoint × benchmark × mode, on Ray, resumable.

    discover checkpoints ─► fingerprint (Ray tasks) ─► units ─► manifest
        for each unit not complete in the store:
            sample-unit  ──► execute-unit ──► score-unit        (Prefect tasks on Ray)
            (asks the vLLM sampler actor of its checkpoint)
        ─► results.json + status.json; the flow fails if any unit failed

Sampling happens in long-lived vLLM *actors* (one per GPU; on CPU one per node) that keep one
engine each; checkpoints are spread over them.  The Prefect task that asks an actor for samples
holds no GPU itself (a task holding the GPU while waiting on GPU work would deadlock), and a
task blocked in ``ray.get`` gives its CPU back to Ray.  Execution runs the sandbox inside a Ray
worker; each stage's output is an artifact in the store, so whatever completed before a crash,
a failure or a kill is never redone (see tasks/checkpoint_eval.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from typing import Any

import ray
from prefect import allow_failure, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.runtime import flow_run
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from tasks import checkpoint_eval as ce
from tasks import runs
from tasks.checkpoints import Checkpoint, discover, fingerprint
from tasks.lineage import prefect_producer
from tasks.store import ArtifactRef, ArtifactStore, storage_options

# Environment the Ray workers need from the caller: data and cache locations, S3 endpoint and
# credentials, model hub settings.  Passed per task (runtime_env), so it reaches workers of a
# cluster that was started before the caller set them.
_FORWARD_PREFIXES = ("CODEALIGN_", "AWS_", "HF_", "VLLM_", "PREFECT_API_")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run_id(run_id: str) -> str:
    """Run ids name store folders: letters, digits, '.', '_' and '-' only."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r}: a run id takes letters, digits, '.', '_' and '-' only")
    return run_id


class UnitsFailed(RuntimeError):
    """Some units failed; the run is marked failed and `codealign resume` retries them."""

    def __init__(self, run_id: str, failures: list[str]):
        super().__init__(run_id, failures)  # args stay picklable (Prefect persists flow results)
        self.run_id, self.failures = run_id, failures

    def __str__(self) -> str:
        return f"run {self.run_id}: {len(self.failures)} failed: " + "; ".join(self.failures)


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_PREFIXES)}


def _producer(task_name: str) -> dict[str, Any]:
    producer = prefect_producer(ce.FLOW_NAME, task_name)
    if ray.is_initialized():
        producer["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return producer


class SamplerActor:
    """A vLLM engine host: one per GPU (or per CPU node), reused across units so that each
    checkpoint's engine starts once."""

    def __init__(self) -> None:
        # Import vLLM (and torch) now: the actors start while checkpoints are fingerprinted,
        # so the ~10 s import is off the critical path.
        import vllm  # noqa: F401

    def sample(self, unit: ce.Unit, config: ce.CheckpointEvalConfig, producer: dict[str, Any]) -> ArtifactRef:
        producer = {**producer, "sampler_node_id": ray.get_runtime_context().get_node_id()}
        return ce.sample_unit(ArtifactStore(config.store), unit, config, producer)


def start_samplers(count: int, tensor_parallel_size: int = 1) -> list[Any]:
    """Start up to ``count`` sampler actors: one per GPU, or one per alive node on CPU.  The
    caller keeps the handles (an actor dies with its last handle) and passes them to tasks."""
    env = {**forwarded_env(), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actor_cls = ray.remote(SamplerActor)
    if gpus:
        per_engine = max(1, tensor_parallel_size)
        placement = {"num_gpus": per_engine, "runtime_env": {"env_vars": env}}
        placements: list[dict[str, Any]] = [placement] * min(gpus // per_engine, count)
    else:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # num_cpus=0: the engine's threads share the node's cores with tasks; reserving a core
        # would leave a 1-core node unable to run any task, and the run would hang.  Ray sets
        # OMP_NUM_THREADS=1 in a worker that reserves no CPU; the engine gets the node's cores.
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        placements = [{"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                       "runtime_env": {"env_vars": {**env, "OMP_NUM_THREADS": str(int(n["Resources"]["CPU"]))}}}
                      for n in nodes[:count]]
    if count and not placements:
        raise RuntimeError("no Ray node can host a vLLM sampler (no GPU for the engine and no node with a CPU)")
    # An actor that dies (out of memory, a crashed engine) is restarted for the units after the
    # one it was serving; that unit fails and is retried by a resume.
    return [actor_cls.options(max_concurrency=1, max_restarts=2, **placement).remote() for placement in placements]


def stop_samplers(actors: list[Any]) -> None:
    for actor in actors:
        ray.kill(actor)


def _unwrap(exc: BaseException) -> BaseException:
    """The user's exception inside a Ray error, so task failures read as what went wrong."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


@task(name="fingerprint-checkpoint", cache_policy=NO_CACHE, persist_result=True)
def fingerprint_task(uri: str) -> Checkpoint:
    return fingerprint(uri)


@task(name="sample-unit", cache_policy=NO_CACHE, persist_result=True)
def sample_task(unit: ce.Unit, config: ce.CheckpointEvalConfig, sampler: Any) -> ArtifactRef:
    try:
        return ray.get(sampler.sample.remote(unit, config, _producer("sample-unit")))
    except ray.exceptions.RayTaskError as exc:
        raise _unwrap(exc) from None


@task(name="execute-unit", cache_policy=NO_CACHE, persist_result=True)
def execute_task(unit: ce.Unit, config: ce.CheckpointEvalConfig, samples: ArtifactRef) -> ArtifactRef:
    return ce.execute_unit(ArtifactStore(config.store), unit, config, samples, _producer("execute-unit"))


@task(name="score-unit", cache_policy=NO_CACHE, persist_result=True)
def score_task(unit: ce.Unit, config: ce.CheckpointEvalConfig, verdicts: ArtifactRef) -> ArtifactRef:
    return ce.score_unit(ArtifactStore(config.store), unit, config, verdicts, _producer("score-unit"))


def _default_run_id() -> str:
    """The Prefect flow-run id: a UI "Retry" of the flow run reuses it, and so resumes the run."""
    return "run-" + str(flow_run.get_id()).replace("-", "")[:12]


@flow(name=ce.FLOW_NAME, task_runner=RayTaskRunner(), persist_result=True, log_prints=True)
def evaluate_checkpoints(config: ce.CheckpointEvalConfig, run_id: str | None = None) -> dict[str, Any]:
    """Evaluate every checkpoint on every benchmark and mode; only units not already complete
    in the store are run.  Fails (after recording them) if any unit failed."""
    logger = get_run_logger()
    store = ArtifactStore(config.store)
    run_id = check_run_id(run_id or _default_run_id())
    producer = _producer("evaluate-checkpoints")
    status = runs.read_status(store, run_id) or runs.RunStatus(run_id, "running")
    status.state, status.failed, status.bad_checkpoints = "running", {}, {}
    status.flow_run_ids = [*status.flow_run_ids, str(flow_run.get_id())]

    with remote_options(num_cpus=1, runtime_env={"env_vars": forwarded_env()}):
        uris = discover(config.checkpoints)
        prints = [(uri, fingerprint_task.submit(uri)) for uri in uris]
        samplers = start_samplers(len(uris), config.engine.tensor_parallel_size)  # warm up while hashing
        try:
            checkpoints = []
            for uri, future in prints:
                future.wait()
                if future.state.is_completed():
                    checkpoints.append(future.result())
                else:
                    status.bad_checkpoints[uri] = future.state.message or "fingerprint failed"
            units = ce.make_units(config, checkpoints)
            units += runs.kept_units(store, run_id, units)
            runs.write_manifest(store, run_id, config, units, producer)
            runs.write_status(store, status, producer)
            pending = [u for u in units if not ce.is_complete(store, u)]
            logger.info(f"run {run_id}: {len(checkpoints)} checkpoints, {len(units)} units, {len(pending)} to run")

            order = list(dict.fromkeys(u.checkpoint.sha256 for u in pending))
            stop_samplers(samplers[len(order):])  # more than the checkpoints left to sample
            samplers = samplers[: len(order)]
            slot_of = {sha: i % len(samplers) for i, sha in enumerate(order)}
            chains = []
            last_on: dict[int, Any] = {}  # sampler index -> its previous sample task
            for unit in pending:
                slot = slot_of[unit.checkpoint.sha256]
                # One sampler serves its units in submission order (grouped by checkpoint), so
                # each engine starts once; a failed unit does not stop the next (allow_failure).
                after = [allow_failure(last_on[slot])] if slot in last_on else None
                samples = last_on[slot] = sample_task.submit(unit, config, samplers[slot], wait_for=after)
                verdicts = execute_task.submit(unit, config, samples)
                scores = score_task.submit(unit, config, verdicts)
                chains.append((unit, (samples, verdicts, scores)))
            for unit, futures in chains:
                for stage, future in zip(("sample", "execute", "score"), futures):
                    future.wait()
                    if not future.state.is_completed():
                        status.failed[unit.key] = f"{stage} {future.state.name}: {future.state.message}"
                        break
        finally:
            stop_samplers(samplers)

    results = runs.write_results(store, run_id, units, producer)
    status.state = "failed" if status.failed or status.bad_checkpoints else "completed"
    runs.write_status(store, status, producer)
    summary = runs.summarize(store, run_id)
    if summary.failed:
        raise UnitsFailed(run_id, summary.failed)
    return {"run_id": run_id, "results": results.uri, "units": summary.units, "complete": summary.complete}


def result_storage(store_root: str) -> LocalFileSystem | RemoteFileSystem:
    """Prefect task and flow results live beside the artifacts (remote when the store is).
    Prefect wants the storage block saved server-side; it is named after the store root."""
    store = ArtifactStore(store_root)
    if store.is_local:
        block: LocalFileSystem | RemoteFileSystem = LocalFileSystem(basepath=store.root[len("file://"):] + "/prefect-results")
    else:
        block = RemoteFileSystem(basepath=f"{store.root}/prefect-results", settings=storage_options(store.root))
    block.save(f"codealign-results-{hashlib.sha256(store.root.encode()).hexdigest()[:16]}", overwrite=True)
    return block


def connect_ray(address: str | None) -> None:
    """Connect this process to the Ray cluster ``address`` names; None starts a fresh local Ray
    ("local": plain ray.init() would join whatever cluster a previous `ray start` on this machine
    left recorded, even a dead one).

    A Ray Client connection (ray://) can fail at start-up through no fault of ours: the cluster's
    proxy forks a server per client, and that fork dies now and then (ray-project/ray#63202,
    "Initialization failure from server"); each new attempt gets a new server."""
    attempts = 3 if (address or "").startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address or "local")
            return
        except ConnectionError as exc:
            if attempt == attempts:
                raise
            logging.getLogger(__name__).warning("Ray Client connection to %s failed (%s); attempt %d of %d",
                                                address, exc, attempt + 1, attempts)
            time.sleep(attempt)


def run_evaluate_checkpoints(config: ce.CheckpointEvalConfig, run_id: str | None = None) -> dict[str, Any]:
    """Run the flow on the Ray cluster and with the result storage that ``config`` names (a
    process already connected to Ray keeps its connection)."""
    connected_here = not ray.is_initialized()
    if connected_here:
        connect_ray(config.ray_address)
    try:
        # The flow's RayTaskRunner finds Ray initialized and uses this connection.
        configured = evaluate_checkpoints.with_options(result_storage=result_storage(config.store))
        return configured(config=config, run_id=run_id)
    finally:
        if connected_here:
            ray.shutdown()


def resume(store_root: str, run_id: str, ray_address: str | None = None) -> dict[str, Any]:
    """Run ``run_id`` again: checkpoints are rediscovered (new ones join), complete units are kept."""
    config = runs.run_config(ArtifactStore(store_root), run_id)
    update = {"store": store_root, **({"ray_address": ray_address} if ray_address else {})}
    config = ce.CheckpointEvalConfig.model_validate({**config.model_dump(), **update})  # validators run again
    return run_evaluate_checkpoints(config, run_id)


__all__ = ["evaluate_checkpoints", "run_evaluate_checkpoints", "resume", "check_run_id", "UnitsFailed"]
