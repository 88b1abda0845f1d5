"""What every flow needs around its composition: run ids, the Ray connection, environment for
Ray workers, Prefect result storage, producer records, and running a flow the way the CLI and
deployments both do (:func:`run_flow`)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import ray
from prefect import Flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.runtime import flow_run, task_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_ray.context import remote_options

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.checkpoints import Checkpoint, fingerprint
from codealign.tasks.artifacts.leases import LEASE_TTL_S, Lease
from codealign.tasks.artifacts.lineage import InputRef, utc_now
from codealign.tasks.artifacts.store import ArtifactStore, local_path, storage_options
from codealign.tasks.errors import CodealignError, is_transient

# Environment the Ray workers need from the caller: data and cache locations, where the store
# and the Prefect API are, model hub and experiment tracker settings.  Passed per task (runtime_env), so it reaches
# workers of a cluster that was started before the caller set them.  Ray shows a task's
# runtime_env to anyone who can read its dashboard or state API, so *secrets never travel this
# way*: no key, token, password or session variable is forwarded.  Workers take credentials from
# their node (its environment, a mounted credentials file named by AWS_SHARED_CREDENTIALS_FILE,
# an instance/IRSA role): docs/cluster.md.
FORWARD_PREFIXES = ("CODEALIGN_", "HF_", "VLLM_", "MLFLOW_", "WANDB_")
FORWARD_NAMES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "PREFECT_API_URL")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|SESSION|CREDENTIAL(?!S_FILE)")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RunFailed(CodealignError, RuntimeError):
    """Some items of a run failed; the run is marked failed and `codealign resume` retries them."""

    exit_code = 1  # the input was fine; the run was not

    def __init__(self, run_id: str, failures: list[str]):
        super().__init__(run_id, failures)  # args stay picklable (Prefect persists flow results)
        self.run_id, self.failures = run_id, failures

    def __str__(self) -> str:
        return f"run {self.run_id}: {len(self.failures)} failed: " + "; ".join(self.failures)


def check_run_id(run_id: str) -> str:
    """Run ids name store folders: letters, digits, '.', '_' and '-' only."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r}: a run id takes letters, digits, '.', '_' and '-' only")
    return run_id


def default_run_id() -> str:
    """The Prefect flow-run id: a UI "Retry" of the flow run reuses it, and so resumes the run."""
    return "run-" + str(flow_run.get_id()).replace("-", "")[:12]


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.upper()))


def forwarded_env() -> dict[str, str]:
    """The caller's environment that Ray workers get through runtime_env (no secrets), with the
    Prefect API this process reports to, so task runs land on the flow run's server."""
    env = {k: v for k, v in os.environ.items()
           if (k.startswith(FORWARD_PREFIXES) or k in FORWARD_NAMES) and not is_secret_name(k)}
    if api := PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = api
    return env


# Retries, each at the layer that can make them (docs/architecture.md, "Retries"):
# - Ray runs a task again whose worker process died (killed, out of memory, its node lost);
# - a Prefect task whose code raised a transient error (tasks.errors.is_transient: a store or
#   network outage longer than the S3 client's own retries, an engine that did not start) runs
#   again after a pause, its attempts in the task run's log; bad input and bugs fail at once;
# - a sampler call lost with its actor is made again on the restarted actor (samplers.run_on).
RAY_TASK_MAX_RETRIES = 3
TASK_RETRIES = 3
TASK_RETRY_DELAYS_S = [5, 20, 60]  # an outage of up to ~1.5 min passes unnoticed but for the log


def ray_options(num_cpus: float = 1):
    """What every Ray task a flow submits inside it gets: ``num_cpus``, the forwarded
    environment (:func:`forwarded_env`) and retries when its worker dies.  Nested
    ``remote_options`` calls change the CPUs only."""
    return remote_options(num_cpus=num_cpus, runtime_env={"env_vars": forwarded_env()},
                          max_retries=RAY_TASK_MAX_RETRIES)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition for every codealign task: only an error that a later attempt
    may not meet (:func:`codealign.tasks.errors.is_transient`)."""
    exc = state.data
    return isinstance(exc, BaseException) and is_transient(unwrap(exc))


def sandbox_cpus(requested: int | None) -> int:
    """The Ray CPUs an execute task reserves, which is also the size of its sandbox pool: the
    requested workers, else every core of the largest alive node, and never more than that node
    has (a reservation no node can grant would wait forever).  So sandbox pools on one node
    never add up to more workers than the node has cores (docs/architecture.md, "Resources")."""
    largest = max((int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, min(requested or largest, max(1, largest)))


@contextmanager
def prefect_api_for_run() -> Iterator[None]:
    """One Prefect API for the whole run.  With ``PREFECT_API_URL`` set (a deployment's worker,
    a user's server, a test harness) that one; without it, one temporary local server started
    here whose URL the Ray workers get (forwarded_env), where each worker process would
    otherwise start a temporary server of its own and record its task runs there.  A cluster
    whose workers cannot reach this machine's loopback needs a real server: docs/cluster.md."""
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's own ephemeral mode would start
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def producer(flow: str, task: str) -> dict[str, Any]:
    """Lineage producer of an artifact made here: flow, task, Prefect run ids, Ray node."""
    made_by: dict[str, Any] = {"flow": flow, "task": task, "flow_run_id": flow_run.get_id(),
                               "task_run_id": task_run.get_id()}  # None outside a run
    if ray.is_initialized():
        made_by["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return made_by


def unwrap(exc: BaseException) -> BaseException:
    """The user's exception inside a Ray error, so task failures read as what went wrong."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _send_logs(*_: Any) -> None:
    """Send the task run's logs to the Prefect API now.  Prefect batches them and sends them from
    a background thread; a Ray worker can be stopped (the run's local Ray shuts down) before
    the batch goes, and the task's log lines would never reach the flow run."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)


def ray_task(name: str) -> Callable[[Callable[..., Any]], Any]:
    """The Prefect task decorator of every task a flow runs on Ray: no input caching (units and
    shards are keyed by content in the store instead), results persisted (a retry of the flow
    run picks them up), transient errors retried with backoff (every stage is idempotent: its
    artifacts are made under leases and reused when present), logs sent before the task's Ray
    worker reports back."""
    return task(name=name, cache_policy=NO_CACHE, persist_result=True, on_completion=[_send_logs],
                on_failure=[_send_logs], retries=TASK_RETRIES, retry_delay_seconds=TASK_RETRY_DELAYS_S,
                retry_condition_fn=retry_transient)


@ray_task("fingerprint")
def fingerprint_task(uri: str) -> Checkpoint:
    """A model or checkpoint's content hash (every flow keys its work by it), on Ray."""
    return fingerprint(uri)


def result_storage(store_root: str) -> LocalFileSystem | RemoteFileSystem:
    """Prefect task and flow results live beside the artifacts (remote when the store is).
    Prefect wants the storage block saved server-side; it is named after the store root."""
    store = ArtifactStore(store_root)
    results = store.uri(layout.PREFECT_RESULTS)
    if (path := local_path(results)) is not None:
        block: LocalFileSystem | RemoteFileSystem = LocalFileSystem(basepath=path)
    else:
        block = RemoteFileSystem(basepath=results, settings=storage_options(store.root))
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


_run_scoped_ray = False  # True while run_flow holds a Ray instance it started for this run
_deployment: str | None = None  # the deployment ("flow/name") whose run run_flow is running, if any
_run_leases: dict[str, Lease] = {}  # run id -> the run lease this process holds (open_run to end_run)


def cluster_outlives_run() -> bool:
    """Whether the Ray cluster this process uses was there before the run and stays after it
    (a cluster given by address, a session's cluster), rather than started for this run."""
    return not _run_scoped_ray


def run_flow(flow: Flow, config: Any, run_id: str | None = None, deployment: str | None = None) -> Any:
    """Run ``flow(config=..., run_id=...)`` on the Ray cluster ``config.ray_address`` names and
    with its results persisted in ``config.store`` (a process already connected to Ray keeps
    its connection; one connected here is shut down at the end).  ``deployment`` ("flow/name"):
    the Prefect deployment that started it, recorded in the run's manifest (:func:`open_run`)."""
    global _run_scoped_ray, _deployment
    connected_here = not ray.is_initialized()
    _deployment = deployment
    with prefect_api_for_run():
        if connected_here:
            connect_ray(config.ray_address)
            _run_scoped_ray = config.ray_address is None
        try:
            # The flow's RayTaskRunner finds Ray initialized and uses this connection.
            return flow.with_options(result_storage=result_storage(config.store))(config=config, run_id=run_id)
        finally:
            _deployment = None
            for run_id in list(_run_leases):
                release_run_lease(run_id)
            if connected_here:
                _run_scoped_ray = False
                ray.shutdown()


class RunContext(NamedTuple):
    """What a flow holds from its first line: unpacked as ``logger, store, run_id, made_by,
    status = open_run(FLOW_NAME, config, run_id)``."""

    logger: logging.Logger | logging.LoggerAdapter
    store: ArtifactStore
    run_id: str
    made_by: dict[str, Any]
    status: runs.RunStatus


def open_run(flow_name: str, config: Any, run_id: str | None) -> RunContext:
    """Every flow opens the same way: its store, its run id (the flow-run id unless given), its
    producer record and its status marked running by this flow run.  The producer names the
    deployment that started the run (the manifest records it): the one a first start came from
    stays, whoever resumes it (the CLI, ``resume-run/by-id``)."""
    store = ArtifactStore(config.store)
    run_id = check_run_id(run_id or default_run_id())
    made_by = producer(flow_name, flow_name)
    if deployment := runs.started_by(store, run_id) or _deployment:
        made_by["deployment"] = deployment
    logger = get_run_logger()
    if run_id not in _run_leases:
        lease = Lease(store, layout.run_record(run_id, layout.RUN_LEASE), LEASE_TTL_S)
        if lease.try_acquire():
            _run_leases[run_id] = lease
        else:
            logger.warning(f"run {run_id} is running in another process too (its run lease is held)")
    return RunContext(logger, store, run_id, made_by, begin_run(store, run_id))


def release_run_lease(run_id: str) -> None:
    """The run lease says a process is running the run (`codealign gc` never deletes such a run;
    a run that says "running" without one was killed: stale).  Released when the run ends."""
    if (lease := _run_leases.pop(run_id, None)) is not None:
        lease.release()


def begin_run(store: ArtifactStore, run_id: str) -> runs.RunStatus:
    """The run's status, marked running by this flow run (a resume or retry appends its
    flow-run id and clears the previous attempt's failures)."""
    status = runs.read_status(store, run_id) or runs.RunStatus(run_id, "running")
    status.state, status.failed, status.bad_inputs = "running", {}, {}
    status.started_at = status.started_at or utc_now()
    status.flow_run_ids = [*status.flow_run_ids, str(flow_run.get_id())]
    return status


def record_failures(status: runs.RunStatus, chains: list[tuple[str, tuple[tuple[str, Any], ...]]]) -> None:
    """Wait for every item's chain of (stage, future); an item's first stage that did not
    complete is its failure."""
    for key, stages in chains:
        for stage, future in stages:
            future.wait()
            if not future.state.is_completed():
                status.failed[key] = f"{stage} {future.state.name}: {future.state.message}"
                break


def end_run(store: ArtifactStore, status: runs.RunStatus, rows: list[dict[str, Any]], inputs: tuple[InputRef, ...],
            producer: dict[str, Any]) -> dict[str, Any]:
    """Write the run's results and final status; raise :class:`RunFailed` if items failed."""
    results = runs.write_results(store, status.run_id, rows, inputs, producer)
    status.state = "failed" if status.failed or status.bad_inputs else "completed"
    runs.write_status(store, status, producer)
    release_run_lease(status.run_id)
    summary = runs.summarize(store, status.run_id)
    if summary.failed:
        raise RunFailed(status.run_id, summary.failed)
    return {"run_id": status.run_id, "results": results.uri, "units": summary.items, "complete": summary.complete}
