"""A pool of warm sandbox workers, one per core by default.

Each worker is a separate interpreter started with a scrubbed environment (no credentials or
tokens from the caller reach it, not even through ``/proc/self/environ``).  One thread per
worker feeds it jobs from a shared queue, so the pool is usable from any process, including a
Ray task: ``execute`` creates a pool, uses it and closes it, and never changes the namespaces of
the process that calls it.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.sandbox.limits import Limits
from tasks.sandbox.records import Job, SampleLimits, Tests, Verdict
from tasks.sandbox.worker import receive, remember, send

# Variables a worker may inherit; everything else (tokens, keys, proxies...) is dropped.
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "CODEALIGN_SANDBOX_NO_NAMESPACES")
_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")


# The self-check every worker passes before its first sample (see SandboxPool._self_check).
_PROBE = Job("self-check", -1, "import numpy\nassert numpy.allclose([1.0], [1.0 + 1e-9])\n", "script")


class IsolationUnavailable(RuntimeError):
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
    info: dict[str, Any]
    cgroup: str | None
    sent_tests: OrderedDict[str, None] = field(default_factory=OrderedDict)  # mirrors the worker's LRU


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
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        cgroup = _make_cgroup(self.limits.max_processes)
        if cgroup:
            env["CODEALIGN_SANDBOX_CGROUP"] = cgroup
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.sandbox.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            info = receive(proc.stdout)
        except EOFError:
            proc.kill()
            raise RuntimeError("sandbox worker failed to start (see its stderr above)") from None
        if not info["namespaces"]:
            if self.strict_isolation:
                proc.kill()
                raise IsolationUnavailable(f"sandbox namespaces unavailable: {info['reason']}")
            _warn_once(info["reason"])
        worker = _Worker(proc, info, cgroup)
        self._self_check(worker)
        return worker

    def _self_check(self, worker: _Worker) -> None:
        """Run a probe sample that imports what the harness imports lazily (numpy, for float
        comparisons): an environment samples cannot use is an error here, never a wrong
        verdict later."""
        assert worker.proc.stdin is not None and worker.proc.stdout is not None
        try:
            send(worker.proc.stdin, (_PROBE, self.limits.for_worker(), None, None))
            _, verdict = receive(worker.proc.stdout)
        except (EOFError, BrokenPipeError, OSError) as exc:
            verdict = Verdict("self-check", -1, "crashed", False, 0.0, 0.0, f"worker died: {exc!r}")
        if not verdict.passed:
            self._stop_worker(worker)
            raise RuntimeError(f"sandbox self-check failed: {verdict.status}: {verdict.detail} (a sample cannot "
                               f"import what judging needs; interpreter {sys.executable})")

    def _stop_worker(self, worker: _Worker) -> None:
        try:
            if worker.proc.stdin:
                worker.proc.stdin.close()
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

    def _call(self, slot: int, job: Job, tests_key: str | None, tests: Tests | None,
              limits: SampleLimits) -> Verdict:
        worker = self._workers[slot]
        if worker is None or worker.proc.poll() is not None:
            if worker is not None:
                self._stop_worker(worker)
            worker = self._workers[slot] = self._start_worker()
        payload = tests if tests_key is not None and tests_key not in worker.sent_tests else None
        try:
            assert worker.proc.stdin is not None and worker.proc.stdout is not None
            send(worker.proc.stdin, (job, limits, tests_key, payload))
            if tests_key is not None:
                worker.sent_tests[tests_key] = None
                remember(worker.sent_tests, tests_key)
            kind, verdict = receive(worker.proc.stdout)
            return verdict
        except (EOFError, BrokenPipeError, OSError) as exc:
            self._stop_worker(worker)
            self._workers[slot] = None
            return Verdict(job.task_id, job.sample_index, "crashed", False, 0.0, 0.0,
                           f"sandbox worker died: {exc!r}", job.benchmark)

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
                key = job.tests_key if tests is not None else None
                try:
                    done.put(self._call(slot, job, key, tests, worker_limits))
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
