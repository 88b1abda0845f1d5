"""Integration-layer fixtures: an S3-compatible server, a Prefect server and a two-node Ray
cluster, each started once per session on loopback (waiting for readiness, retrying the
start), and the preference runs the training and sweep tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from servers import free_port, start_with_retries, stop

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"




@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3-compatible server (moto's standalone server) on 127.0.0.1, for the whole session;
    the AWS variables point s3fs at it and at a credentials file."""
    import subprocess
    import sys
    import time
    import urllib.request

    def start():
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                return proc, endpoint
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    proc.wait()
                    raise RuntimeError("moto S3 server not ready") from None
                time.sleep(0.2)

    proc, endpoint = start_with_retries("moto S3 server", start)
    # Credentials as a real cluster gives them: a credentials file each node can read, named by
    # a (non-secret) variable; the keys themselves are in no environment variable.
    credentials = tmp_path_factory.mktemp("aws") / "credentials"
    credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("codealign-test")
    try:
        yield {"endpoint": endpoint, "bucket": "codealign-test", "env": env}
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect server (prefect_test_harness) for the whole session; yields its URL
    so that flow processes started by a test can report to it too."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from contextlib import ExitStack

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with ExitStack() as stack:
        start_with_retries("Prefect test server", lambda: stack.enter_context(
            prefect_test_harness(server_startup_timeout=180)))
        yield PREFECT_API_URL.value()


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the test process dies, even by SIGKILL, so that
    `ray start --block` still stops its node."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_for_nodes(count: int, timeout: float = 120) -> None:
    import time

    import ray

    deadline = time.monotonic() + timeout
    while sum(1 for n in ray.nodes() if n.get("Alive")) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray cluster did not reach {count} alive nodes")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A Ray head node on 127.0.0.2 (2 CPUs) for the session, started with the `ray` CLI; this
    process is connected to it as a driver, so every flow in the session reuses its workers.
    ``add_node()`` joins a second node (1 CPU, 127.0.0.3) and returns a function that stops it."""
    import subprocess
    import sys
    import time

    import ray

    ray_bin = str(Path(sys.executable).with_name("ray"))
    # `ray start` refuses to join a node to a cluster under the single-host switch
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
           # no 30 s drain (for Ray Serve's requests) when a node is stopped: a second node's stop
           # and the session's end are immediate
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    nodes: list[subprocess.Popen] = []

    def agent_ports() -> list[str]:
        """Ports of a node's agents, free ones: Ray's defaults (dashboard agent 52365, ...) are
        shared by every Ray on the machine, and the unit tests' local Ray on the other test
        worker may hold them; a head whose job agent cannot bind never registers it, and a job
        submission answers "No available agent to submit job"."""
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]

    def start_head():
        port, client_port, dashboard_port = free_port(), free_port(), free_port()
        head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--node-ip-address={HEAD_IP}",
                                 f"--port={port}", "--num-cpus=2", f"--dashboard-host={HEAD_IP}",
                                 f"--dashboard-port={dashboard_port}", *agent_ports(),
                                 "--disable-usage-stats", f"--ray-client-server-port={client_port}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        address = f"{HEAD_IP}:{port}"
        deadline = time.monotonic() + 120
        while not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False)
            except Exception:  # noqa: BLE001 - the head is still starting
                if head.poll() is not None or time.monotonic() > deadline:
                    stop(head)
                    raise RuntimeError("the Ray head node did not start") from None
                time.sleep(1)
        return head, address, client_port, f"http://{HEAD_IP}:{dashboard_port}"

    # The dashboard serves Ray's state API (ray.util.state), which tests read to check what a
    # cluster user can see.
    head, address, client_port, dashboard = start_with_retries("Ray head node", start_head)
    try:
        def add_node():
            node = subprocess.Popen([ray_bin, "start", f"--address={address}", "--block",
                                     f"--node-ip-address={WORKER_IP}", "--num-cpus=1", *agent_ports(),
                                     "--disable-usage-stats"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent)
            nodes.append(node)
            _wait_for_nodes(2)

            def stop():
                node.terminate()
                node.wait(60)
                _wait_for_nodes(1)

            return stop

        yield {"address": address, "client": f"ray://{HEAD_IP}:{client_port}", "add_node": add_node,
               "dashboard": dashboard, "head_pid": head.pid}
    finally:
        _kill_warm_samplers()
        ray.shutdown()
        for proc in [*nodes, head]:
            stop(proc)


def _kill_warm_samplers() -> None:
    """Kill the session's warm samplers first: stopping a node that still hosts a vLLM engine
    waits out Ray's grace period for its worker (~30 s at the end of every session)."""
    import ray
    from ray.util import list_named_actors

    from codealign.flows.samplers import SAMPLER_NAMESPACE

    for actor in list_named_actors(all_namespaces=True):
        if actor["namespace"] == SAMPLER_NAMESPACE:
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=SAMPLER_NAMESPACE))
            except ValueError:  # gone meanwhile (its idle release)
                pass


@pytest.fixture(scope="session")
def pathway_runs(tmp_path_factory, toy_model_paths, prefect_api, ray_cluster):
    """One run from toy-base (PTA: a base model completes code prompts, Flow mode) and one from
    toy-instruct (FTA: instructions through its chat template) over the planted source."""
    from preference_runs import config, generate, planted_source

    from codealign.tasks.artifacts.store import ArtifactStore

    root = tmp_path_factory.mktemp("preferences")
    source = planted_source(root / "source.jsonl")
    out = {}
    for pathway, model, mode in (("pta", "toy-base", "flow"), ("fta", "toy-instruct", "command")):
        store = root / f"store-{pathway}"
        result = generate(config(model, source, store, mode=mode), pathway)
        out[pathway] = (ArtifactStore(str(store)), result)
    return root, source, out


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """An empty artifact store, once on the local filesystem and once on the test S3 server."""
    from codealign.tasks.artifacts.store import ArtifactStore

    if request.param == "local":
        return ArtifactStore(str(tmp_path / "store"))
    s3 = request.getfixturevalue("s3_server")
    return ArtifactStore(f"s3://{s3['bucket']}/t-{tmp_path.name}")
