"""Transient faults a run outlives with no `codealign resume`, each retried at the layer that
can retry it: the S3 store unreachable for longer than the S3 client's own retries (Prefect
task retries with backoff), a sampler actor killed in the middle of sampling (the call made
again on the restarted actor), a Ray worker process that died (Ray runs its task again).  The
run completes, and its retries are in its Prefect logs."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from servers import CuttableProxy
from toy_checkpoints import make_checkpoints

from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.evaluation.units import CheckpointEvalConfig, recorded_units

pytestmark = pytest.mark.slow


def _config(checkpoint: Path, store: str, **overrides) -> CheckpointEvalConfig:
    base = dict(checkpoints=[str(checkpoint)], store=store, benchmarks=["toy"], modes=["flow"],
                sampling={"n": 2, "temperature": 0.8, "max_tokens": 48},
                engine={"max_model_len": 512, "enforce_eager": True}, ks=[1], limit=4, workers=1)
    return CheckpointEvalConfig(**{**base, **overrides})


def _run_in_thread(config: CheckpointEvalConfig, run_id: str) -> tuple[threading.Thread, dict]:
    from codealign.flows import registry

    outcome: dict = {}

    def run():
        try:
            outcome["result"] = registry.run("evaluate-checkpoints", config, run_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait(condition, what: str, outcome: dict, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert "error" not in outcome and "result" not in outcome, f"the run ended before {what}: {outcome}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def _task_runs_in(state_names: list[str]) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterState, TaskRunFilterStateName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=None, name=TaskRunFilterStateName(any_=state_names))))


def _flow_run_logs(store: ArtifactStore, run_id: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    (flow_run_id, *_) = runs.read_status(store, run_id).flow_run_ids
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def _wait_for_logs(store: ArtifactStore, run_id: str, text: str, timeout: float = 30) -> list[str]:
    """The run's logs once one line holds ``text`` (workers send theirs in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = _flow_run_logs(store, run_id)
        if any(text in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)


def _complete(store: ArtifactStore, run_id: str, outcome: dict, verdicts: int) -> None:
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["complete"] == 1 and runs.summarize(store, run_id).state == "completed"
    status = runs.read_status(store, run_id)
    assert len(status.flow_run_ids) == 1  # one flow run: nothing was resumed
    (unit,) = recorded_units(store, run_id)
    assert len(store.get_jsonl(unit.artifact("verdicts.jsonl"))) == verdicts


def test_a_store_outage_longer_than_the_s3_clients_retries_is_retried_by_the_task(
        tmp_path, toy_model_paths, prefect_api, ray_cluster, s3_server, monkeypatch):
    import s3fs

    moto = urlparse(s3_server["endpoint"])
    proxy = CuttableProxy((moto.hostname, moto.port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # the run (driver and workers) reaches S3 through it
    s3fs.S3FileSystem.clear_instance_cache()
    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["endpoint"]}, skip_instance_cache=True,
                               use_listings_cache=False)
    prefix = f"{s3_server['bucket']}/outage-{tmp_path.name}"
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [11])
    try:
        thread, outcome = _run_in_thread(_config(train / "checkpoint-11", f"s3://{prefix}"), "outage")
        # Cut the store once sampling has begun (its lease is taken): the sampler's write of the
        # samples then meets an unreachable store, beyond what botocore and s3fs retry on their own.
        _wait(lambda: direct.glob(f"{prefix}/units/*/samples.jsonl.lease"), "sampling", outcome)
        proxy.cut()
        cut_at = time.monotonic()
        _wait(lambda: _task_runs_in(["AwaitingRetry", "Retrying"]), "task waiting to retry", outcome)
        outage_s = time.monotonic() - cut_at
        proxy.restore()
        thread.join(600)
    finally:
        proxy.close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])  # the test reads the store directly
        s3fs.S3FileSystem.clear_instance_cache()
    print(f"store unreachable for {outage_s:.1f} s")
    store = ArtifactStore(f"s3://{prefix}")
    _complete(store, "outage", outcome, verdicts=8)
    logs = _wait_for_logs(store, "outage", "Retry 1/3 will start")
    assert any("Retry 1/3 will start" in m for m in logs), logs[-20:]


def test_a_sampler_killed_mid_sampling_is_restarted_and_its_call_made_again(
        tmp_path, toy_model_paths, prefect_api, ray_cluster):
    from codealign.tasks.artifacts.leases import read_lease

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [13])
    store_dir = tmp_path / "store"
    # Enough tokens that sampling is under way for a few seconds.
    config = _config(train / "checkpoint-13", str(store_dir), sampling={"n": 8, "temperature": 0.8, "max_tokens": 128})
    thread, outcome = _run_in_thread(config, "killed-sampler")
    leases: list[Path] = []
    _wait(lambda: leases.extend(store_dir.glob("units/*/samples.jsonl.lease")) or leases, "sampling", outcome)
    store = ArtifactStore(str(store_dir))
    key = str(leases[0].relative_to(store_dir))
    holder = read_lease(store, key)
    os.kill(holder.pid, signal.SIGKILL)  # the sampler's process, as the kernel's OOM killer would
    thread.join(600)
    _complete(store, "killed-sampler", outcome, verdicts=32)
    logs = _wait_for_logs(store, "killed-sampler", "sampler lost during sample_units")
    assert any("sampler lost during sample_units" in m for m in logs), logs[-20:]


def test_a_ray_worker_that_died_has_its_task_run_again(tmp_path, prefect_api, ray_cluster):
    import cloudpickle

    from codealign.flows import runtime

    marker = tmp_path / "attempts"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the cluster's workers cannot import tests
    try:
        flow = _worker_death_flow()
        states = flow(str(marker))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert states == ["Completed"]
    attempts = json.loads(marker.read_text())
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # two worker processes: the first died
    assert runtime.RAY_TASK_MAX_RETRIES >= 1


def _worker_death_flow():
    from prefect import flow
    from prefect_ray import RayTaskRunner

    from codealign.flows import runtime

    @runtime.ray_task("dies-once")
    def dies_once(marker: str) -> str:
        path = Path(marker)
        attempts = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*attempts, os.getpid()]))
        if not attempts:
            os._exit(1)  # the worker process dies, as when its node kills it
        return "done"

    @flow(task_runner=RayTaskRunner())
    def worker_death(marker: str) -> list[str]:
        with runtime.ray_options():
            future = dies_once.submit(marker)
        future.wait()
        return [future.state.name]

    return worker_death
