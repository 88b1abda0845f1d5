"""Run one job's sample process and report how it ended (the worker's side; no judging here).

The worker serving jobs holds no tests and no expected outputs: it is a clean fork server.  With
namespaces it is PID 1 of a private PID namespace (see ``worker.py``).  Per sample it forks
once; the sample sets its limits, drops every capability and becomes a function server on its
call socket (:mod:`codealign.tasks.sandbox.calls`), whose other end the judge holds (the judge sent the
socket with the job).  Jobs the judge cannot keep apart from the sample (``judged_in_process``)
run the old way: the sample runs its tests itself (:mod:`codealign.tasks.sandbox.harness`) and sends a
verdict frame.  The worker watches the sample's capped output, its pidfd, a wall-clock deadline
and its own control socket (the judge's "finish" when it has its verdict).  Then, whatever
happened, it sends SIGKILL to every other process in the namespace (``kill(-1)`` from PID 1
reaches all of them, double-forked and new-session descendants included), reaps them, replaces
the sample's tmpfs mounts with fresh ones, and reports the exit to the judge.

Without namespaces (the OS refused them) the sample gets its own session, is killed as a
process group, and works in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass

from codealign.tasks.sandbox import calls, harness, isolation
from codealign.tasks.sandbox.records import (
    AssertTests,
    CompiledTests,
    Job,
    SampleLimits,
    Tests,
)

_SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
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


def _sample_main(job: Job, tests: Tests | None, limits: SampleLimits, ctx: SandboxContext, call_fd: int,
                 out_w: int, work: str, inherited_bytes: int, run_limits: SampleLimits) -> None:
    """Body of the sample process; never returns.  ``limits`` are the process's own (wider
    for a compiled job, whose children each get their step's limits), ``run_limits`` what the
    program's run may use.  ``tests``: only for the in-process modes."""
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
        os.dup2(call_fd, calls.CALL_FD)
        os.closerange(calls.CALL_FD + 1, 65536)
        if work != _WORK_DIR:  # fallback mode: a per-sample temporary directory
            os.environ.update(HOME=work, TMPDIR=work, PWD=work)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        cpu = max(1, math.ceil(limits.cpu_s))
        # The limit is on what the sample allocates: the worker's inherited mappings (preloaded
        # modules) are added, so a verdict never depends on the worker's history.
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
        _send_verdict("crashed", f"sandbox set-up failed: {exc}", None, call_fd)
        os._exit(70)
    if job.mode == "asserts" and isinstance(tests, AssertTests):  # model-written tests
        from codealign.tasks.sandbox import selftests

        selftests.serve_with_tests(job.program, tests)
    if job.judged_in_process:
        status, detail, outputs = harness.run(job, tests, run_limits)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001 - a closed stream must not hide the verdict
            pass
        _send_verdict(status, detail, outputs if isinstance(tests, AssertTests) else None, calls.CALL_FD,
                      outputs if isinstance(outputs, str) else "")
        os._exit(0)
    calls.serve(job.program)


def _send_verdict(status: str, detail: str, counts: object, fd: int, flag: str = "") -> None:
    message = {"status": status, "detail": detail, "counts": counts, "flag": flag}
    calls.send_frame(fd, calls.VERDICT, json.dumps(message).encode())


def fresh_work_dir(ctx: SandboxContext, tmpfs_mb: int) -> str:
    """A clean, empty, private working directory for the next sample."""
    if ctx.is_namespace_init:
        isolation.reset_sample_filesystem(tmpfs_mb, _WORK_DIR, ctx.sample_uid)
        return _WORK_DIR
    import tempfile  # fallback mode only: workers keep their imports lean (cheaper forks)

    return tempfile.mkdtemp(prefix="codealign-")


@dataclass
class ExitReport:
    """How a sample process ended, as its worker saw it (sent to the judge)."""

    wait_status: int
    cpu_s: float
    wall_s: float
    output: bytes
    timed_out: bool
    limits: SampleLimits


def run_job(job: Job, tests: Tests | None, limits: SampleLimits, ctx: SandboxContext, call_fd: int,
            control: socket.socket) -> ExitReport:
    """Run one sample process to its end.  Called in a sandbox worker process (never in the
    caller's).  A message on ``control`` (the judge has its verdict) ends the sample."""
    run_limits = limits = job.effective_limits(limits)
    if isinstance(tests, CompiledTests):
        limits = tests.process_limits(run_limits)
    work = fresh_work_dir(ctx, limits.file_size_mb)
    out_r, out_w = os.pipe()
    inherited = _address_space_bytes()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        try:
            _sample_main(job, tests, limits, ctx, call_fd, out_w, work, inherited, run_limits)
        finally:
            os._exit(72)
    os.close(out_w)
    os.close(call_fd)

    deadline = start + limits.wall_s
    output = bytearray()
    sel = selectors.DefaultSelector()
    os.set_blocking(out_r, False)
    sel.register(out_r, selectors.EVENT_READ, "output")
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    sel.register(control, selectors.EVENT_READ, "judge")

    def drain() -> bool:
        """Read what is there; False at end of file."""
        while True:
            try:
                chunk = os.read(out_r, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            output.extend(chunk[: max(0, limits.output_bytes - len(output))])

    timed_out = ended = False
    while not ended:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=remaining):
            if key.data in ("exit", "judge"):
                ended = True
            elif not drain():
                sel.unregister(key.fd)
    if timed_out or ended:
        _kill(pid)
    _, wait_status, usage = os.wait4(pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    cpu += _kill_and_reap_everything_else(pid, ctx)
    if out_r in sel.get_map():
        drain()
    sel.close()
    for fd in (out_r, pidfd):
        os.close(fd)
    if not ctx.is_namespace_init:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return ExitReport(wait_status, round(cpu, 4), round(time.monotonic() - start, 4), bytes(output), timed_out,
                      limits)


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
