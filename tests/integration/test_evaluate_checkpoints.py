"""The evaluate-checkpoints flow for real: Prefect server, Ray nodes, vLLM on the toy model,
the sandbox, a local and an S3 store; and the faults it must survive (a corrupt checkpoint,
SIGKILL mid-run, an artifact modified behind the store's back).

Checkpoints are copies of toy-base that differ in one small file (so each has its own content
hash and units) and sample the same; every test keeps units tiny (a few problems, n = 2)
because each checkpoint costs one vLLM engine start (~11 s on 2 cores with enforce_eager,
which skips graph compilation; ~28 s without).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runs import assert_quiet, flow_command
from killed_runs import kill_then_resume
from toy_checkpoints import make_checkpoints

from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.store import ArtifactStore, IntegrityError
from codealign.tasks.evaluation.units import (
    CheckpointEvalConfig,
    is_complete,
    recorded_units,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]




def config(checkpoints, store, **overrides) -> CheckpointEvalConfig:
    base = dict(checkpoints=[str(c) for c in checkpoints], store=str(store), benchmarks=["toy"], modes=["flow"],
                sampling={"n": 2, "temperature": 0.8, "max_tokens": 48},
                engine={"max_model_len": 512, "enforce_eager": True},
                ks=[1, 2], limit=4, workers=1)
    return CheckpointEvalConfig(**{**base, **overrides})


def run_flow(cfg, run_id):
    from codealign.flows import registry

    return registry.run("evaluate-checkpoints", cfg, run_id)


def unit_artifacts(store: ArtifactStore) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key in store.list("units"):
        _, unit, name = key.split("/")
        found.setdefault(unit, []).append(name)
    return found


def rows_by_checkpoint(store: ArtifactStore, run_id: str) -> dict[str, dict]:
    rows = store.get_json(f"runs/{run_id}/results.json")["rows"]
    return {(r["checkpoint"], r["benchmark"], r["mode"]): {k: v for k, v in r.items() if k != "unit"} for r in rows}


def test_corrupt_checkpoint_fails_its_units_and_resume_runs_only_those(tmp_path, toy_model_paths, prefect_api,
                                                                      ray_cluster):
    from codealign.flows.runtime import RunFailed

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [10, 20])
    weights = train / "checkpoint-10" / "model.safetensors"  # the first: the next one must still run
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated, as by a crash during save
    store = ArtifactStore(str(tmp_path / "store"))
    cfg = config([train], store.root)

    with pytest.raises(RunFailed, match=r"checkpoint-10 toy flow .*model\.safetensors: size .* truncated"):
        run_flow(cfg, "r1")
    summary = runs.summarize(store, "r1")
    assert (summary.state, summary.items, summary.complete, len(summary.failed)) == ("failed", 2, 1, 1)
    first = {u.checkpoint.name: u for u in recorded_units(store, "r1")}
    assert is_complete(store, first["checkpoint-20"]) and not is_complete(store, first["checkpoint-10"])
    done_before = store.meta(first["checkpoint-20"].artifact("samples.jsonl"))

    weights.write_bytes(good)  # fixed: new content, new units
    from codealign.flows import registry

    registry.resume(store.root, "r1")
    summary = runs.summarize(store, "r1")
    assert (summary.state, summary.complete, summary.failed) == ("completed", 2, [])
    # checkpoint-20's unit was not redone: same samples artifact, produced by the first flow run
    assert store.meta(first["checkpoint-20"].artifact("samples.jsonl")) == done_before
    status = runs.read_status(store, "r1")
    fixed = {u.checkpoint.name: u for u in recorded_units(store, "r1")}["checkpoint-10"]
    assert store.meta(fixed.artifact("samples.jsonl")).producer["flow_run_id"] == status.flow_run_ids[-1]
    assert done_before.producer["flow_run_id"] == status.flow_run_ids[0]
    assert done_before.producer["task"] == "sample-units" and done_before.producer["task_run_id"]
    assert done_before.params["benchmark"] == "toy" and done_before.code["commit"] and done_before.packages["prefect"]
    # every unit has exactly its three artifacts; the corrupt checkpoint's unit left no samples
    assert sorted(map(sorted, unit_artifacts(store).values())) == \
        [["samples.jsonl", "scores.json", "verdicts.jsonl"]] * 2

    clean = ArtifactStore(str(tmp_path / "clean"))
    run_flow(config([train], clean.root), "clean")
    assert rows_by_checkpoint(store, "r1") == rows_by_checkpoint(clean, "clean")

    # Lineage from the run back to each checkpoint and its content hash
    from codealign.tasks.artifacts.lineage import lineage_tree

    tree = lineage_tree(store, store.uri("runs/r1/results.json"))
    leaves = {n.inputs[0].inputs[0].inputs[0].uri for n in tree.inputs}
    assert leaves == {f"file://{train}/checkpoint-10", f"file://{train}/checkpoint-20"}


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path, toy_model_paths, prefect_api,
                                                                   ray_cluster):
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1, 2])
    store_dir = tmp_path / "store"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    units = store_dir / "units"
    store = kill_then_resume(flow_command(store_dir, train, ray_cluster["address"], "killed"), env, REPO,
                             lambda: bool(list(units.glob("*/scores.json.meta.json"))),  # sidecar written last
                             "complete unit", store_dir, ray_cluster["address"], items=4)
    artifacts = unit_artifacts(store)
    assert len(artifacts) == 4 and all(sorted(a) == ["samples.jsonl", "scores.json", "verdicts.jsonl"]
                                       for a in artifacts.values())
    for unit in recorded_units(store, "killed"):  # 4 problems x n=2, once each
        verdicts = store.get_jsonl(unit.artifact("verdicts.jsonl"))
        assert sorted((v["task_id"], v["sample_index"]) for v in verdicts) == sorted(
            {(v["task_id"], i) for v in verdicts for i in range(2)})
        assert len(verdicts) == 8
    assert len(store.get_json("runs/killed/results.json")["rows"]) == 4


def test_flow_against_s3_store_with_s3_checkpoint(tmp_path, toy_model_paths, prefect_api, ray_cluster, s3_server):
    import s3fs

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [5])
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["endpoint"]})
    remote_train = f"{s3_server['bucket']}/train-{tmp_path.name}"
    fs.put(str(train / "checkpoint-5"), f"{remote_train}/checkpoint-5", recursive=True)
    root = f"s3://{s3_server['bucket']}/store-{tmp_path.name}"

    result = run_flow(config([f"s3://{remote_train}"], root), "s3run")
    store = ArtifactStore(root)
    assert result["complete"] == 1 and runs.summarize(store, "s3run").state == "completed"
    (unit,) = recorded_units(store, "s3run")
    assert unit.checkpoint.uri == f"s3://{remote_train}/checkpoint-5"
    assert len(store.get_jsonl(unit.artifact("verdicts.jsonl"))) == 8
    assert fs.ls(f"{s3_server['bucket']}/store-{tmp_path.name}/prefect-results"), "Prefect results not in the store"
    # a stored artifact modified behind the store's back: reading fails, naming it
    key = unit.artifact("scores.json")
    fs.pipe_file(store.path(key), b'{"overall": {"pass@1": 1.0}}')
    with pytest.raises(IntegrityError, match=r"units/.*/scores\.json: content sha256"):
        store.get(key)
    from codealign.flows import registry

    with pytest.raises(IntegrityError, match=r"scores\.json"):
        registry.resume(root, "s3run")  # the run's results are rebuilt from verified unit scores only


def test_two_node_cluster_spreads_samplers(tmp_path, toy_model_paths, prefect_api, ray_cluster):
    stop_node = ray_cluster["add_node"]()
    try:
        train = make_checkpoints(tmp_path / "train", toy_model_paths, [1, 2])
        store = ArtifactStore(str(tmp_path / "store"))
        run_flow(config([train], store.root, ray_address=ray_cluster["address"]), "two")
    finally:
        stop_node()
    units = recorded_units(store, "two")
    nodes = {store.meta(u.artifact("samples.jsonl")).producer["sampler_node_id"] for u in units}
    assert len(nodes) == 2, "one vLLM sampler per node"
    assert runs.summarize(store, "two").complete == 2


def test_cli_drives_a_cluster_through_ray_client_quietly(tmp_path, toy_model_paths, prefect_api, ray_cluster):
    """ray://host:port: the flow drives the session's cluster through Ray Client."""
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1])
    store = tmp_path / "store"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    r = subprocess.run(flow_command(store, train, ray_cluster["client"], "r"), env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert_quiet(r, store / "runs" / "r" / "terminal.log", units=2)
    st = ArtifactStore(str(store))
    assert runs.summarize(st, "r").state == "completed"
    assert sorted(row["benchmark"] for row in st.get_json("runs/r/results.json")["rows"]) == ["toy", "toy-infill"]


# ---------------------------------------------------------------- a shared cluster (issue 13)


def _sandbox_workers(root_pid: int) -> int:
    """Sandbox worker interpreters alive under ``root_pid`` (the session cluster's head node: not
    the unit tests' pools, which the other test worker runs at the same time), not counting
    their own children."""
    import psutil

    workers = set()
    try:
        descendants = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for proc in descendants:
        try:
            if "codealign.tasks.sandbox.worker" in " ".join(proc.cmdline()):
                workers.add((proc.pid, proc.ppid()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    pids = {pid for pid, _ in workers}
    return sum(1 for _, ppid in workers if ppid not in pids)


def test_execute_units_reserve_the_cores_their_sandbox_pools_use(tmp_path, toy_model_paths, prefect_api,
                                                                 ray_cluster):
    """Two execute units ready at once on the 2-CPU head: each reserves the CPUs its pool uses,
    so they run one after the other instead of starting 2 x 2 sandbox workers."""
    import threading

    from codealign.tasks.artifacts.checkpoints import fingerprint
    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.evaluation.units import make_units

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1, 2])
    cfg = config([train], tmp_path / "store", limit=None, workers=None)  # pool size: the node's cores
    store = ArtifactStore(cfg.store)
    units = make_units(cfg, [fingerprint(str(train / f"checkpoint-{s}")) for s in (1, 2)])
    problems = cfg.select_problems(["toy"])["toy"]
    for unit in units:  # samples already made: both execute units are ready at the same moment
        rows = [{"task_id": p.task_id, "index": i, "completion": None, "solution": p.canonical_solution}
                for p in problems for i in range(12)]
        store.put_jsonl(unit.artifact("samples.jsonl"), rows, ArtifactMeta("samples", {}, (), {}))

    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _sandbox_workers(ray_cluster["head_pid"]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_flow(cfg, "cores")
    finally:
        stop.set()
        watcher.join()
    assert result["complete"] == 2
    producers = [store.meta(u.artifact("verdicts.jsonl")).producer for u in units]
    assert all(p["task"] == "execute-unit" for p in producers)
    assert 1 <= peak[0] <= 2, f"{peak[0]} sandbox workers at once on a 2-CPU node"
    for unit in units:
        assert store.get_json(unit.artifact("scores.json"))["benchmarks"]["toy"]["pass@1"] == 1.0


def test_no_store_secret_reaches_ray_or_prefect(tmp_path, toy_model_paths, prefect_api, ray_cluster, s3_server,
                                                monkeypatch):
    """The flow's process has S3 keys in its environment (as a user's shell would); the run
    against the S3 store works, and the secret is in nothing Ray's state API or Prefect shows:
    workers got their credentials from the credentials file the node can read."""
    import asyncio

    import s3fs
    from prefect.client.orchestration import get_client
    from ray.util import state

    secret = f"secret-{tmp_path.name}-{os.getpid()}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAcodealigntest")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s3fs.S3FileSystem.clear_instance_cache()
    root = f"s3://{s3_server['bucket']}/secret-{tmp_path.name}"
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [3])
    result = run_flow(config([train], root), "secret-run")
    assert result["complete"] == 1

    seen = []
    deadline = time.monotonic() + 60
    while True:  # the dashboard (Ray's state API) may still be starting
        try:
            for listing in (state.list_tasks, state.list_actors, state.list_jobs, state.list_runtime_envs,
                            state.list_workers):
                seen.append(repr(listing(address=ray_cluster["dashboard"], detail=True, limit=10_000,
                                         raise_on_missing_output=False)))
            break
        except Exception:  # noqa: BLE001 - not ready yet: retry the listing, never the assertion
            seen.clear()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    listings = "\n".join(seen)
    assert "execute-unit" in listings and "SamplerActor" in listings, "the listings cover the run's tasks"
    assert "AWS_SHARED_CREDENTIALS_FILE" in listings  # what workers do get: where the credentials are
    assert secret not in listings and "AKIAcodealigntest" not in listings

    async def parameters() -> str:
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(limit=200)
            return json.dumps([r.parameters for r in flow_runs], default=str)

    params = asyncio.run(parameters())
    assert root in params and secret not in params


def test_two_concurrent_runs_over_the_same_checkpoints_compute_each_unit_once(tmp_path, toy_model_paths,
                                                                              prefect_api, ray_cluster):
    """Two CLI runs start together over the same checkpoints and store (two nightly sweeps, or a
    retry racing a resume): both finish, every artifact verifies, and each unit's artifacts are
    computed by one run (the other waits on the lease and reuses them)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1, 2])
    store_dir = tmp_path / "store"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    commands = [flow_command(store_dir, train, ray_cluster["address"], run_id) for run_id in ("night-a", "night-b")]
    commands[0].insert(3, "--verbose")  # everything as it comes, on the terminal; night-b stays quiet
    procs = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for command in commands]
    outputs = ["".join(p.communicate(timeout=600)) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in outputs]
    assert "Beginning flow run" in outputs[0] and "Beginning flow run" not in outputs[1]
    store = ArtifactStore(str(store_dir))
    for run_id in ("night-a", "night-b"):
        assert runs.summarize(store, run_id).complete == 4
    keys = store.list("units")
    assert len(keys) == 12
    for key in keys:
        store.get(key)  # content matches its sidecar: no interleaved writes
    flow_runs = [store.get_json(f"runs/{r}/status.json")["flow_run_ids"][-1] for r in ("night-a", "night-b")]

    async def computing() -> list[str]:
        found: list[str] = []
        async with get_client() as client:
            while True:  # the API pages logs 200 at a time
                page = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_runs)), limit=200,
                                              offset=len(found))
                found += [log.message for log in page]
                if len(page) < 200:
                    return [message for message in found if ": computing " in message]

    expected = {f"unit {key.split('/')[1]}: computing {key.split('/')[2]}" for key in keys}
    deadline = time.monotonic() + 60
    while True:  # task logs reach the API in batches: wait until all have arrived
        lines = asyncio.run(computing())
        if {line.split(" (")[0] for line in lines} >= expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    time.sleep(5)  # a duplicate would have been logged before the runs ended; let its batch arrive
    lines = asyncio.run(computing())
    assert sorted(line.split(" (")[0] for line in lines) == sorted(expected), "each artifact computed once"


def test_a_run_on_a_persistent_cluster_reuses_the_warm_sampler(tmp_path, toy_model_paths, prefect_api, ray_cluster):
    """The session cluster outlives its runs: the second run samples on the sampler the first
    one started (vLLM imported, engine warm) instead of starting its own."""
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1, 2])
    store = ArtifactStore(str(tmp_path / "store"))
    run_flow(config([train / "checkpoint-1"], store.root), "warm-1")
    run_flow(config([train / "checkpoint-2"], store.root), "warm-2")
    (first,), (second,) = recorded_units(store, "warm-1"), recorded_units(store, "warm-2")
    pids = [store.meta(u.artifact("samples.jsonl")).producer["sampler_pid"] for u in (first, second)]
    assert pids[0] == pids[1], "the second run started a sampler of its own"


def test_a_run_submitted_as_a_ray_job_finishes_after_the_submitter_exits(tmp_path, toy_model_paths, prefect_api,
                                                                          ray_cluster):
    """`--submit DASHBOARD`: the command submits a Ray Job and exits; the run goes on as the
    job's driver on the cluster (ray_address auto), reports to the Prefect API it was given, and
    completes in the store."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from ray.job_submission import JobStatus, JobSubmissionClient

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1])
    store_dir = tmp_path / "store"
    command = [sys.executable, "-m", "codealign", "evaluate-checkpoints", "--checkpoints", str(train),
               "--store", str(store_dir), "--benchmarks", "toy", "--modes", "flow", "--n", "1", "--k", "1",
               "--max-tokens", "48", "--limit", "2", "--max-model-len", "512", "--enforce-eager", "--workers", "1",
               "--run-id", "submitted", "--submit", ray_cluster["dashboard"]]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CODEALIGN_JOB_PYTHON": sys.executable}
    submitted = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job = submitted.stdout.strip().splitlines()[-1]
    assert job == "codealign-submitted" and "ray job status codealign-submitted" in submitted.stderr

    client = JobSubmissionClient(ray_cluster["dashboard"])  # the submitter is gone; the job runs on
    deadline = time.monotonic() + 400
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, f"job {job} still {status}"
        time.sleep(1)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    summary = runs.summarize(ArtifactStore(str(store_dir)), "submitted")
    assert (summary.state, summary.complete) == ("completed", 1)
    assert client.get_job_info(job).runtime_env["env_vars"]["PREFECT_API_URL"] == prefect_api

    async def flow_runs():
        async with get_client() as prefect:
            named = FlowFilter(name=FlowFilterName(any_=["evaluate-checkpoints"]))
            return await prefect.read_flow_runs(flow_filter=named)

    mine = [r for r in asyncio.run(flow_runs()) if r.parameters.get("run_id") == "submitted"]
    assert mine and mine[-1].state.is_completed()  # what the UI and `codealign runs` follow


def test_a_deployment_run_submits_its_run_as_a_ray_job_and_follows_it_to_the_end(tmp_path, toy_model_paths,
                                                                                 prefect_api, ray_cluster):
    """The deployment's entry flow with ``submit_to``: the run goes to the cluster as a Ray Job,
    and the entry flow run lasts until the job ends, with its outcome."""
    from codealign.flows.deployable import evaluate_entry

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [2])
    os.environ["CODEALIGN_JOB_PYTHON"] = sys.executable
    try:
        result = evaluate_entry(config([train], tmp_path / "store", limit=2, sampling={"n": 1, "max_tokens": 48}),
                                run_id="followed", submit_to=ray_cluster["dashboard"])
    finally:
        os.environ.pop("CODEALIGN_JOB_PYTHON")
    assert result == {"run_id": "followed", "ray_job": "codealign-followed", "ray_job_status": "SUCCEEDED"}
    summary = runs.summarize(ArtifactStore(str(tmp_path / "store")), "followed")
    assert (summary.state, summary.complete) == ("completed", 1)
