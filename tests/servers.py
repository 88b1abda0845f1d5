"""Starting servers in tests: a free loopback port, retries of a start (never of an
assertion), stopping a child process, killing a run at a chosen moment.  Imported by the
layers' conftest files and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

START_ATTEMPTS = 3


def start_with_retries(what: str, start):
    """Call ``start()`` (which starts a server and waits until it is ready, raising if it is
    not) up to START_ATTEMPTS times: a port taken between choosing and binding it, or a slow
    machine, costs a retry of the *start*, never a failed assertion."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start()
        except Exception as exc:  # any failure to start is retried, then raised
            if attempt == START_ATTEMPTS:
                raise RuntimeError(f"{what} did not start after {START_ATTEMPTS} attempts") from exc
            print(f"{what} did not start ({exc}); attempt {attempt + 1} of {START_ATTEMPTS}")


# Ports Ray's components take by default whatever other ports a node is given (dashboard agent
# 52365, dashboard 8265, Ray Client 10001, metrics 8080): a server given one of them by
# free_port() would make the Ray node that starts next fail ("used by other components").
RAY_DEFAULT_PORTS = frozenset({52365, 52366, 8265, 10001, 8080, 6379})


def free_port() -> int:
    """A free loopback port, never one of Ray's default ports."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sigkill_when(command: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool], what: str,
                 timeout: float = 400) -> None:
    """Run ``command`` in a session of its own and SIGKILL the whole session (the flow process
    and everything it started) as soon as ``ready()`` holds; fail, with the run's stderr, if it
    ends first or ``ready`` does not hold within ``timeout`` seconds."""
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"no {what} in time"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # also on failure: nothing of the run outlives the test
        proc.wait()
        proc.stderr.close()
