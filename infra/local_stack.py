"""The local stack on loopback, with one command: Prefect server (UI + API), a process work
pool and its worker, a Ray head node — and the deployments on them.

    codealign stack up     [--prefect-port 4200] [--ray-port 6380] [--cpus N]
                           [--store ./store] [--no-deploy] [--state-dir DIR]
    codealign stack status [--state-dir DIR]
    codealign stack down   [--state-dir DIR]

``up`` starts each service, waits until it answers (the Prefect API's health endpoint, the Ray
head's GCS), retrying a start that dies, and records pids, addresses and log files in the state
directory (default ``~/.cache/codealign/stack``; Prefect's database lives there too).  Then the
UI is at http://127.0.0.1:4200 and flows run with ``PREFECT_API_URL=http://127.0.0.1:4200/api``.
``down`` stops the worker, the server and the Ray node (SIGTERM, then SIGKILL after 30 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from codealign.tasks.errors import CodealignError

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
# Ray replaces 127.0.0.1 by the machine's routable address (its nodes are meant to be reached
# from other hosts); another loopback address it leaves as it is, so the stack stays on loopback.
RAY_HOST = "127.0.0.2"
POOL = "codealign"


class StackError(CodealignError, RuntimeError):
    """A service that did not come up; the message names it and its log file."""

    exit_code = 1


def state_path(state_dir: Path | None = None) -> Path:
    """Where the stack keeps its pids, logs and database: ``state_dir``, else $CODEALIGN_STACK_DIR,
    else ~/.cache/codealign/stack."""
    default = Path(os.environ.get("CODEALIGN_STACK_DIR", Path.home() / ".cache" / "codealign" / "stack"))
    return (state_dir or default).resolve()


def service_env(state: Path, prefect_port: int) -> dict[str, str]:
    api = f"http://{HOST}:{prefect_port}/api"
    return {**os.environ, "PREFECT_HOME": str(state / "prefect-home"), "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # the server's own links (a notification's "Flow run: …") point at this UI
            "PREFECT_UI_URL": f"http://{HOST}:{prefect_port}",
            "PREFECT_SERVER_API_HOST": HOST, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            # loopback only: no token (a driver on this machine connects without one)
            "RAY_AUTH_MODE": "disabled",
            # on SIGTERM Ray drains a node for 30 s, for Ray Serve's in-flight requests; codealign
            # runs no Serve app, so `stack down` stops the head at once
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def _spawn(name: str, command: list[str], state: Path, env: dict[str, str]) -> subprocess.Popen:
    """A service in its own session (it outlives this command), logging to ``<state>/<name>.log``."""
    log = open(state / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps the file open
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(REPO))


def _wait(name: str, proc: subprocess.Popen, ready, timeout: float, state: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}; see {state / (name + '.log')}")
        if time.monotonic() > deadline:
            raise StackError(f"{name} not ready after {timeout:.0f} s; see {state / (name + '.log')}")
        time.sleep(1)


def _start(name: str, command: list[str], ready, state: Path, env: dict[str, str], timeout: float = 180,
           attempts: int = 2) -> subprocess.Popen:
    """Start ``name`` and wait until ``ready()``; a start that dies or hangs is retried once."""
    for attempt in range(1, attempts + 1):
        proc = _spawn(name, command, state, env)
        try:
            _wait(name, proc, ready, timeout, state)
            return proc
        except StackError:
            _terminate(proc.pid)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _prefect_ready(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _ray_ready(address: str, env: dict[str, str]) -> bool:
    return subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], env=env, capture_output=True,
                          timeout=60).returncode == 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs.  A zombie does not: the services outlive the ``stack up``
    process that started them, so whoever reaps them (PID 1) may do it late, and ``down`` would
    otherwise wait the whole grace period for a process that has already exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): the signal is all there is to go by
        return True


def _terminate(pid: int, grace: float = 30) -> None:
    """SIGTERM the service's process group, SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def up(state: Path, prefect_port: int, ray_port: int, cpus: int, store: str, deploy: bool) -> dict:
    state.mkdir(parents=True, exist_ok=True)
    record_file = state / "stack.json"
    if record_file.exists():
        running = json.loads(record_file.read_text())
        if all(_alive(pid) for pid in running["pids"].values()):
            return running
        down(state)
    env = service_env(state, prefect_port)
    api = env["PREFECT_API_URL"]
    record = {"api": api, "ui": f"http://{HOST}:{prefect_port}", "ray_address": f"{RAY_HOST}:{ray_port}", "pool": POOL,
              "pids": {}, "state_dir": str(state)}
    try:
        server = _start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port",
                                           str(prefect_port)], lambda: _prefect_ready(api), state, env)
        record["pids"]["prefect-server"] = server.pid
        ray_head = _start("ray-head", [str(BIN / "ray"), "start", "--head", "--block", f"--node-ip-address={RAY_HOST}",
                                       f"--port={ray_port}", f"--num-cpus={cpus}", "--include-dashboard=false",
                                       "--disable-usage-stats"],
                          lambda: _ray_ready(record["ray_address"], env), state, env)
        record["pids"]["ray-head"] = ray_head.pid
        created = subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process",
                                  "--overwrite"], env=env, capture_output=True, text=True, timeout=120)
        if created.returncode != 0:
            raise StackError(f"work pool {POOL} was not created: {created.stderr.strip() or created.stdout.strip()}")
        worker = _start("prefect-worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type",
                                           "process"], lambda: _worker_ready(api), state, env)
        record["pids"]["prefect-worker"] = worker.pid
        if deploy:
            with open(state / "deploy.log", "ab") as log:
                deployed = subprocess.run([sys.executable, "-m", "codealign", "deploy", "--pool", POOL, "--store",
                                           store, "--ray-address", record["ray_address"]], env=env, cwd=str(REPO),
                                          stdout=log, stderr=subprocess.STDOUT, timeout=300)
            if deployed.returncode != 0:
                raise StackError(f"the deployments were not created; see {state / 'deploy.log'}")
    except BaseException:
        record_file.write_text(json.dumps(record))
        down(state)
        raise
    record_file.write_text(json.dumps(record, indent=2))
    return record


def _worker_ready(api: str) -> bool:
    """The pool has an online worker (it sent a heartbeat)."""
    request = urllib.request.Request(f"{api}/work_pools/{POOL}/workers/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return any(w.get("status") == "ONLINE" for w in json.load(response))
    except OSError:
        return False


def down(state: Path) -> None:
    record_file = state / "stack.json"
    if not record_file.exists():
        return
    record = json.loads(record_file.read_text())
    for name in ("prefect-worker", "prefect-server", "ray-head"):  # the worker first: it reports to the server
        if name in record["pids"]:
            _terminate(record["pids"][name])
    record_file.unlink()


stack_app = typer.Typer(help="The local stack on loopback: Prefect server, work pool and worker, Ray head, "
                             "and the deployments on them.", no_args_is_help=True)
StateDir = Annotated[Path | None, typer.Option(help="pids, logs, Prefect database (default: "
                                                    "$CODEALIGN_STACK_DIR or ~/.cache/codealign/stack)")]


@stack_app.command("up")
def up_command(
    state_dir: StateDir = None,
    prefect_port: Annotated[int, typer.Option(help="Prefect server (UI and API) port")] = 4200,
    ray_port: Annotated[int, typer.Option(help="Ray head's GCS port")] = 6380,
    cpus: Annotated[int, typer.Option(help="CPUs the Ray head offers")] = os.cpu_count() or 1,
    store: Annotated[str, typer.Option(help="artifact store of the deployed flows")] = "./store",
    no_deploy: Annotated[bool, typer.Option("--no-deploy", help="start the services only")] = False,
) -> None:
    """Start (or find running) every service, waiting until each answers; print their addresses."""
    record = up(state_path(state_dir), prefect_port, ray_port, cpus, store, not no_deploy)
    print(json.dumps(record, indent=2))
    print(f"UI: {record['ui']}   flows: export PREFECT_API_URL={record['api']}", file=sys.stderr)


@stack_app.command("status")
def status_command(state_dir: StateDir = None) -> None:
    """The running stack's addresses and which services are alive (exit 3 when it is down)."""
    record_file = state_path(state_dir) / "stack.json"
    if not record_file.exists():
        print("local stack: down")
        raise typer.Exit(3)
    record = json.loads(record_file.read_text())
    print(json.dumps({**record, "alive": {n: _alive(p) for n, p in record["pids"].items()}}, indent=2))


@stack_app.command("down")
def down_command(state_dir: StateDir = None) -> None:
    """Stop the worker, the server and the Ray node (SIGTERM, then SIGKILL after 30 s)."""
    down(state_path(state_dir))
