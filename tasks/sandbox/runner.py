"""Run one job in its own process tree and turn what happened into a :class:`Verdict`.

Process tree per sample (all forked from a warm worker, so no interpreter start-up):

    worker ── spawner (joins the pids cgroup, unshares PID+mount namespaces)
                 └── sample  = PID 1 of the new PID namespace: private /tmp, own /proc,
                               limits set, capabilities dropped, then the harness runs

The worker watches two pipes (the sample's output, capped; the verdict channel) against a
wall-clock deadline, then SIGKILLs the sample: as PID 1 its death takes every descendant with it.
The verdict message carries a per-sample nonce; anything else on that pipe is ignored, and a
sample that dies without the message never passes.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import resource
import selectors
import signal
import sys
import time
from dataclasses import dataclass

from tasks.sandbox import harness, isolation
from tasks.sandbox.records import DifferentialJob, Job, Limits, Verdict

_SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
_RESULT_FD = 3


@dataclass
class SandboxContext:
    """What a worker knows about its own isolation."""

    namespaces: bool
    cgroup_procs_fd: int | None = None


def _sample_main(job: Job, tests: DifferentialJob | None, limits: Limits, ctx: SandboxContext,
                 nonce: str, result_w: int, out_w: int) -> None:
    """Body of the sample process; never returns."""
    try:
        if ctx.namespaces:
            work = isolation.setup_sample_filesystem(limits.file_size_mb)
        else:
            os.setsid()
            import tempfile

            work = tempfile.mkdtemp(prefix="codealign-")
        os.chdir(work)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.dup2(result_w, _RESULT_FD)
        os.closerange(_RESULT_FD + 1, 65536)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="replace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="replace")
        os.environ.clear()
        os.environ.update(_SAFE_ENV, HOME=work, TMPDIR=work, PWD=work)
        cpu = max(1, math.ceil(limits.cpu_s))
        mem = limits.memory_mb * 1024 * 1024
        fsize = limits.file_size_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if ctx.namespaces:
            isolation.drop_privileges()
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
    except BaseException as exc:  # noqa: BLE001 - report set-up failure as a verdict
        _send(result_w, nonce, job.mode, "crashed", f"sandbox set-up failed: {exc}", None)
        os._exit(70)
    status, detail, outputs = harness.run(job, tests)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a closed stream must not hide the verdict
        pass
    _send(_RESULT_FD, nonce, job.mode, status, detail, outputs)
    os._exit(0)


def _send(fd: int, nonce: str, mode: str, status: str, detail: str, outputs: object) -> None:
    if mode == "record":  # trusted canonical code: outputs are arbitrary Python values
        payload = nonce.encode() + b"P" + pickle.dumps((status, detail, outputs))
    else:
        payload = nonce.encode() + b"J" + json.dumps({"status": status, "detail": detail}).encode()
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _spawner_main(job: Job, tests: DifferentialJob | None, limits: Limits, ctx: SandboxContext,
                  nonce: str, result_w: int, out_w: int, pid_w: int) -> None:
    """Creates the sample's namespaces, forks it, reports its pid, waits, exits like it."""
    try:
        if ctx.cgroup_procs_fd is not None:
            os.write(ctx.cgroup_procs_fd, b"0")
        if ctx.namespaces:
            isolation.enter_sample_namespaces()
        pid = os.fork()
    except BaseException as exc:  # noqa: BLE001
        _send(result_w, nonce, job.mode, "crashed", f"sandbox spawn failed: {exc}", None)
        os._exit(71)
    if pid == 0:
        os.close(pid_w)
        _sample_main(job, tests, limits, ctx, nonce, result_w, out_w)
    os.write(pid_w, str(pid).encode())
    os.close(pid_w)
    os.close(result_w)
    os.close(out_w)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def run_job(job: Job, tests: DifferentialJob | None, limits: Limits, ctx: SandboxContext) -> Verdict:
    """Run one job to a verdict.  Called in a sandbox worker process (never in the caller's)."""
    limits = job.effective_limits(limits)
    nonce = os.urandom(16).hex()
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    pid_r, pid_w = os.pipe()
    start = time.monotonic()
    spawner = os.fork()
    if spawner == 0:
        for fd in (result_r, out_r, pid_r):
            os.close(fd)
        try:
            _spawner_main(job, tests, limits, ctx, nonce, result_w, out_w, pid_w)
        finally:
            os._exit(72)
    for fd in (result_w, out_w, pid_w):
        os.close(fd)

    deadline = start + limits.wall_limit_s
    chunks: dict[str, bytearray] = {"result": bytearray(), "output": bytearray(), "pid": bytearray()}
    caps = {"result": None if job.mode == "record" else 1 << 20, "output": limits.output_bytes, "pid": 32}
    sel = selectors.DefaultSelector()
    for fd, name in ((result_r, "result"), (out_r, "output"), (pid_r, "pid")):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    pidfd = os.pidfd_open(spawner)
    sel.register(pidfd, selectors.EVENT_READ, "exit")

    def drain(fd: int, name: str) -> bool:
        """Read what is there; False at end of file."""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            cap = caps[name]
            buf = chunks[name]
            buf += chunk if cap is None else chunk[: max(0, cap - len(buf))]

    timed_out = False
    exited = False
    while not exited:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=remaining):
            if key.data == "exit":
                exited = True
            elif not drain(key.fd, key.data):
                sel.unregister(key.fd)
    sample_pid = int(chunks["pid"]) if chunks["pid"].isdigit() else None
    if timed_out or not ctx.namespaces:
        # As PID 1 of its namespace the sample takes every descendant with it; without
        # namespaces we kill its process group.
        _kill(sample_pid or spawner, group=not ctx.namespaces and sample_pid is not None)
    _, wait_status, usage = os.wait4(spawner, 0)
    for key in list(sel.get_map().values()):
        if key.data != "exit":
            drain(key.fd, key.data)
    sel.close()
    for fd in (result_r, out_r, pid_r, pidfd):
        os.close(fd)
    wall = time.monotonic() - start
    cpu = usage.ru_utime + usage.ru_stime
    return _verdict(job, limits, nonce, bytes(chunks["result"]), bytes(chunks["output"]), wait_status, cpu, wall,
                    timed_out)


def _kill(pid: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _verdict(job: Job, limits: Limits, nonce: str, result: bytes, output: bytes, wait_status: int,
             cpu: float, wall: float, timed_out: bool) -> Verdict:
    def make(status: str, detail: str, outputs: object = None) -> Verdict:
        return Verdict(job.task_id, job.sample_index, status, status == "passed", round(cpu, 4),
                       round(wall, 4), detail[:300], job.benchmark, outputs)

    exit_code = os.waitstatus_to_exitcode(wait_status)
    code = exit_code if exit_code >= 0 else 0
    signalled = code >= 128
    head = nonce.encode()
    if result.startswith(head) and not timed_out and code == 0:
        kind, body = result[len(head): len(head) + 1], result[len(head) + 1:]
        try:
            if kind == b"P":
                status, detail, outputs = pickle.loads(body)
                return make(status, detail, outputs)
            message = json.loads(body)
            return make(str(message["status"]), str(message["detail"]))
        except Exception as exc:  # noqa: BLE001
            return make("crashed", f"unreadable verdict message ({exc})")
    if result.startswith(head) and code in (70, 71):
        return make("crashed", result[len(head) + 1:].decode(errors="replace"))
    if timed_out:
        return make("timeout", f"wall-clock limit {limits.wall_limit_s:g}s exceeded")
    if cpu >= limits.cpu_s or (signalled and code - 128 in (signal.SIGXCPU,)):
        return make("timeout", f"CPU limit {limits.cpu_s:g}s exceeded")
    tail = output.decode(errors="replace").strip().splitlines()
    last = tail[-1] if tail else ""
    if "MemoryError" in last:
        return make("memory", last)
    if signalled:
        return make("crashed", f"killed by signal {signal.Signals(code - 128).name}" + (f": {last}" if last else ""))
    return make("error", f"exited with code {code} before the tests completed" + (f": {last}" if last else ""))
