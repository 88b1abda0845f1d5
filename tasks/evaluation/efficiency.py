"""Efficiency: a passing sample's CPU time relative to the canonical solution's (EvalPerf-style).

Per passing sample of a Python problem::

    efficiency = max(canonical_cpu, FLOOR_S) / max(sample_cpu, FLOOR_S)

(> 1: faster than the canonical solution).  Differential ("+") problems compare the CPU seconds
spent in the entry point over all inputs (the verdict's ``tests_cpu_s`` against the sum of the
reference run's ``base_cpu`` and ``plus_cpu``, both measured with ``time.process_time`` around
each call in the sandbox, program load excluded).  Script-judged problems compare whole sample
processes (the verdict's ``cpu_s`` against the reference run's ``cpu_s``, both in the same
sandbox): coarser, since interpreter start-up and the test code count on both sides.
A task's score is the mean over its passing samples; a benchmark's the mean over its tasks with
at least one (``n_tasks``); overall the mean over all such tasks.  docs/metrics.md has the details.

Instruction counts are not measured: :func:`instructions_note` says why (``perf_event_open``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from codealign.tasks.problems.problem import Problem

# CPU seconds below which both sides count as this much (timer resolution and noise would
# otherwise make ratios of near-zero times meaningless); it bounds a ratio at canonical / FLOOR_S.
FLOOR_S = 1e-4


def ratio(canonical_cpu: float, sample_cpu: float) -> float:
    return max(canonical_cpu, FLOOR_S) / max(sample_cpu, FLOOR_S)


def sample_efficiency(problem: Problem | None, verdict: dict[str, Any],
                      reference: dict[str, Any] | None) -> float | None:
    """The efficiency of one verdict; None unless it passed, the problem is Python and both
    CPU times are known."""
    if problem is None or problem.language != "python" or not verdict.get("passed") or not reference:
        return None
    if problem.differential is not None:
        sample_cpu = verdict.get("tests_cpu_s")
        if sample_cpu is None or "base_cpu" not in reference:
            return None
        return ratio(sum(reference["base_cpu"]) + sum(reference["plus_cpu"]), float(sample_cpu))
    if verdict.get("cpu_s") is None or reference.get("cpu_s") is None:
        return None
    return ratio(float(reference["cpu_s"]), float(verdict["cpu_s"]))


def label_efficiency(problems: Sequence[Problem], verdicts: Iterable[dict[str, Any]],
                     references: dict[str, dict[str, Any]] | None = None,
                     workers: int | None = None) -> list[dict[str, Any]]:
    """``verdicts`` with an ``efficiency`` field each (None for failing samples, other languages
    and unknown tasks).  ``references``: the canonical runs by task id
    (:func:`codealign.tasks.evaluation.execute.reference_runs`); read from its cache when not given."""
    verdicts = list(verdicts)
    by_id = {p.task_id: p for p in problems}
    if references is None:
        if any(v.get("passed") and getattr(by_id.get(v.get("task_id")), "language", None) == "python"
               for v in verdicts):
            from codealign.tasks.evaluation.execute import canonical_references

            references = canonical_references(problems, workers)
        else:
            references = {}
    return [{**v, "efficiency": sample_efficiency(by_id.get(v.get("task_id")), v, references.get(v.get("task_id")))}
            for v in verdicts]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def efficiency_scores(verdicts: Iterable[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Per benchmark and overall ``{"mean", "n_tasks"}`` (``mean`` None when no task has a
    passing sample) from the ``efficiency`` stored with each verdict; benchmarks whose verdicts
    carry no such field are left out (overall None when none do).  Overall also carries
    ``instructions``: :func:`instructions_note`."""
    labelled: set[str] = set()
    per_task: dict[tuple[str, str], list[float]] = defaultdict(list)
    for v in verdicts:
        if "efficiency" not in v:
            continue
        benchmark = v.get("benchmark") or ""
        labelled.add(benchmark)
        if v["efficiency"] is not None:
            per_task[(benchmark, v["task_id"])].append(float(v["efficiency"]))
    if not labelled:
        return {}, None
    task_means: dict[str, list[float]] = defaultdict(list)
    for (benchmark, _), values in per_task.items():
        task_means[benchmark].append(_mean(values))

    def summary(values: list[float]) -> dict[str, Any]:
        return {"mean": _mean(values) if values else None, "n_tasks": len(values)}

    per_benchmark = {name: summary(task_means.get(name, [])) for name in sorted(labelled)}
    overall = summary([m for values in task_means.values() for m in values])
    overall["instructions"] = instructions_note()
    return per_benchmark, overall


# ------------------------------------------------------------------- instruction counts

_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "arm64": 241}
_PERF_TYPE_HARDWARE, _PERF_COUNT_HW_INSTRUCTIONS = 0, 1


@cache
def instructions_note() -> str:
    """Whether this machine could count instructions (a ``perf_event_open`` attempt for the
    calling thread's user-space instructions); the metric itself uses CPU time only."""
    number = _PERF_EVENT_OPEN.get(platform.machine())
    if number is None:
        return f"instructions: not available (perf_event_open syscall number unknown on {platform.machine()})"
    attr = bytearray(128)  # struct perf_event_attr (PERF_ATTR_SIZE_VER7 and below fit)
    struct.pack_into("IIQ", attr, 0, _PERF_TYPE_HARDWARE, len(attr), _PERF_COUNT_HW_INSTRUCTIONS)
    struct.pack_into("Q", attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(bytes(attr), len(attr))
        fd = libc.syscall(number, buf, 0, -1, -1, 0)
    except OSError as exc:
        return f"instructions: not available ({exc})"
    if fd < 0:
        err = ctypes.get_errno()
        name = errno.errorcode.get(err, str(err))
        return f"instructions: not available (perf_event_open not permitted: {name}, {os.strerror(err)})"
    os.close(fd)
    return "instructions: not measured (perf_event_open is permitted here, but only CPU time is implemented)"
