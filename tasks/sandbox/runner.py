"""Run one job in its own process tree and turn what happened into a :class:`Verdict`.

With namespaces the worker serving jobs is PID 1 of a private PID namespace (see
``worker.py``).  Per sample it forks once; the sample sets its limits, drops every capability
and runs the harness.  The worker watches two pipes (the sample's capped output and the verdict
channel) and the sample's pidfd against a wall-clock deadline.  Then, whatever happened, it
sends SIGKILL to every other process in the namespace (``kill(-1)`` from PID 1 reaches all of
them, double-forked and new-session descendants included), reaps them, and replaces the
sample's tmpfs mounts with fresh ones: nothing a sample started or wrote survives its verdict.
This costs one fork per sample instead of new namespaces per sample.

Without namespaces (the OS refused them) the sample gets its own session, is killed as a
process group, and works in a temporary directory that is removed afterwards.

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
from tasks.sandbox.records import CompiledTests, Job, SampleLimits, Tests, Verdict

_SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
_RESULT_FD = 3
_WORK_DIR = "/tmp/work"


@dataclass
class SandboxContext:
    """What a worker knows about its own isolation."""

    namespaces: bool
    cgroup_procs_fd: int | None = None
    sample_uid: int | None = None  # the unprivileged uid samples run as (None: the worker's own)

    @property
    def is_namespace_init(self) -> bool:
        return self.namespaces and os.getpid() == 1


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def prepare_worker_process() -> None:
    """Set up, once per worker, what every sample would otherwise redo after its fork: the
    scrubbed environment and text streams over fds 0-2 (which each sample points at /dev/null
    and its output pipe)."""
    os.environ.clear()
    os.environ.update(_SAFE_ENV, HOME=_WORK_DIR, TMPDIR=_WORK_DIR, PWD=_WORK_DIR)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="replace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="replace")


def _sample_main(job: Job, tests: Tests | None, limits: SampleLimits, ctx: SandboxContext,
                 nonce: str, result_w: int, out_w: int, work: str, inherited_bytes: int,
                 run_limits: SampleLimits) -> None:
    """Body of the sample process; never returns.  ``limits`` are the process's own (wider
    for a compiled job, whose children each get their step's limits), ``run_limits`` what the
    program's run may use."""
    try:
        if ctx.cgroup_procs_fd is not None:
            os.write(ctx.cgroup_procs_fd, b"0")
        if not ctx.namespaces:
            os.setsid()
        os.chdir(work)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.dup2(result_w, _RESULT_FD)
        os.closerange(_RESULT_FD + 1, 65536)
        if work != _WORK_DIR:  # fallback mode: a per-sample temporary directory
            os.environ.update(HOME=work, TMPDIR=work, PWD=work)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        cpu = max(1, math.ceil(limits.cpu_s))
        # The limit is on what the sample allocates: the worker's inherited mappings (preloaded
        # modules, cached tests) are added, so a verdict never depends on the worker's history.
        mem = inherited_bytes + limits.memory_mb * 1024 * 1024
        fsize = limits.file_size_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if ctx.namespaces:
            if ctx.sample_uid is not None:
                isolation.become_unprivileged(ctx.sample_uid)
            isolation.drop_capabilities()
    except BaseException as exc:  # noqa: BLE001 - report set-up failure as a verdict
        _send(result_w, nonce, job.mode, "crashed", f"sandbox set-up failed: {exc}", None)
        os._exit(70)
    status, detail, outputs = harness.run(job, tests, run_limits)
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
        counts = outputs if mode == "asserts" else None  # {"passed": k, "total": n}
        message = {"status": status, "detail": detail, "counts": counts}
        if mode == "differential" and isinstance(outputs, dict):  # a pass: {"tests_cpu_s": seconds}
            message["tests_cpu_s"] = outputs.get("tests_cpu_s")
        payload = nonce.encode() + b"J" + json.dumps(message).encode()
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def fresh_work_dir(ctx: SandboxContext, tmpfs_mb: int) -> str:
    """A clean, empty, private working directory for the next sample."""
    if ctx.is_namespace_init:
        isolation.reset_sample_filesystem(tmpfs_mb, _WORK_DIR, ctx.sample_uid)
        return _WORK_DIR
    import tempfile  # fallback mode only: workers keep their imports lean (cheaper forks)

    return tempfile.mkdtemp(prefix="codealign-")


def run_job(job: Job, tests: Tests | None, limits: SampleLimits, ctx: SandboxContext) -> Verdict:
    """Run one job to a verdict.  Called in a sandbox worker process (never in the caller's)."""
    run_limits = limits = job.effective_limits(limits)
    if isinstance(tests, CompiledTests):
        limits = tests.process_limits(run_limits)
    nonce = os.urandom(16).hex()
    work = fresh_work_dir(ctx, limits.file_size_mb)
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    inherited = _address_space_bytes()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for fd in (result_r, out_r):
            os.close(fd)
        try:
            _sample_main(job, tests, limits, ctx, nonce, result_w, out_w, work, inherited, run_limits)
        finally:
            os._exit(72)
    for fd in (result_w, out_w):
        os.close(fd)

    deadline = start + limits.wall_s
    chunks: dict[str, bytearray] = {"result": bytearray(), "output": bytearray()}
    caps = {"result": None if job.mode == "record" else 1 << 20, "output": limits.output_bytes}
    sel = selectors.DefaultSelector()
    for fd, name in ((result_r, "result"), (out_r, "output")):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    pidfd = os.pidfd_open(pid)
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

    timed_out = exited = False
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
    if timed_out:
        _kill(pid)
    _, wait_status, usage = os.wait4(pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    cpu += _kill_and_reap_everything_else(pid, ctx)
    for key in list(sel.get_map().values()):
        if key.data != "exit":
            drain(key.fd, key.data)
    sel.close()
    for fd in (result_r, out_r, pidfd):
        os.close(fd)
    if not ctx.is_namespace_init:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - start
    return _verdict(job, limits, nonce, bytes(chunks["result"]), bytes(chunks["output"]), wait_status, cpu, wall,
                    timed_out)


def _kill(pid: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_and_reap_everything_else(pid: int, ctx: SandboxContext) -> float:
    """Kill what the sample left behind; returns the CPU seconds of what we reaped."""
    if not ctx.is_namespace_init:
        _kill(pid, group=True)  # its session's process group; an escaped daemon is the known gap
        return 0.0
    try:
        os.kill(-1, signal.SIGKILL)  # from PID 1: every other process in this namespace
    except ProcessLookupError:
        return 0.0
    cpu = 0.0
    while True:
        try:
            _, _, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return cpu
        cpu += usage.ru_utime + usage.ru_stime


def _verdict(job: Job, limits: SampleLimits, nonce: str, result: bytes, output: bytes, wait_status: int,
             cpu: float, wall: float, timed_out: bool) -> Verdict:
    def make(status: str, detail: str, outputs: object = None, counts: dict[str, int] | None = None,
             tests_cpu: float | None = None) -> Verdict:
        passed, total = (counts["passed"], counts["total"]) if counts else (None, None)
        return Verdict(job.task_id, job.sample_index, status, status == "passed", round(cpu, 4),
                       round(wall, 4), detail[:300], job.benchmark, outputs, passed, total,
                       round(tests_cpu, 6) if tests_cpu is not None and status == "passed" else None)

    head = nonce.encode()
    signalled = os.WIFSIGNALED(wait_status)
    code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
    if result.startswith(head) and not timed_out and code == 0:
        kind, body = result[len(head): len(head) + 1], result[len(head) + 1:]
        try:
            if kind == b"P":
                status, detail, outputs = pickle.loads(body)
                return make(status, detail, outputs)
            message = json.loads(body)
            counts = message.get("counts")
            if counts is not None:  # written by the sample process: check before trusting it
                counts = {"passed": int(counts["passed"]), "total": int(counts["total"])}
            tests_cpu = _tests_cpu(message.get("tests_cpu_s"), cpu)
            return make(str(message["status"]), str(message["detail"]), counts=counts, tests_cpu=tests_cpu)
        except Exception as exc:  # noqa: BLE001
            return make("crashed", f"unreadable verdict message ({exc})")
    if result.startswith(head) and code == 70:
        return make("crashed", result[len(head) + 1:].decode(errors="replace"))
    if timed_out:
        return make("timeout", f"wall-clock limit {limits.wall_s:g}s exceeded")
    if cpu >= limits.cpu_s or (signalled and os.WTERMSIG(wait_status) == signal.SIGXCPU):
        return make("timeout", f"CPU limit {limits.cpu_s:g}s exceeded")
    tail = output.decode(errors="replace").strip().splitlines()
    last = tail[-1] if tail else ""
    if "MemoryError" in last:
        return make("memory", last)
    if signalled:
        name = signal.Signals(os.WTERMSIG(wait_status)).name
        return make("crashed", f"killed by signal {name}" + (f": {last}" if last else ""))
    return make("error", f"exited with code {code} before the tests completed" + (f": {last}" if last else ""))


# process_time and rusage can disagree by a clock tick; more than this is not a measurement.
_TESTS_CPU_SLACK_S = 0.05


def _tests_cpu(value: object, process_cpu: float) -> float | None:
    """The sample's claimed CPU seconds on its inputs, checked like ``counts``: a number (not a
    bool), finite, not negative and not above the sample process's own CPU time (measured here,
    outside it, from rusage); anything else raises (the verdict becomes ``crashed``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"tests_cpu_s is not a number: {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > process_cpu + _TESTS_CPU_SLACK_S:
        raise ValueError(f"tests_cpu_s {value!r} outside [0, process CPU {process_cpu:.4f}s]")
    return value
