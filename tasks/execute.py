"""``execute(problems, samples, limits) -> verdicts``: the sandboxed execution entry point.

It turns (problem, sample) pairs into jobs, makes sure the expected outputs of differential
("+") benchmarks exist (computed once from the canonical solutions, in the sandbox, and cached
on disk), runs everything in a :class:`~tasks.sandbox.pool.SandboxPool` and returns verdicts in
input order.  It is self-contained and picklable-argument-only, so a Ray task can run one batch.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tasks.benchmarks import Problem
from tasks.samples import Sample
from tasks.sandbox.pool import SandboxPool
from tasks.sandbox.records import DifferentialJob, Job, Limits, Verdict

# Generous limits for computing expected outputs from trusted canonical code.
_RECORD_LIMITS = Limits(cpu_s=120, wall_s=600, memory_mb=8192)
_EXPECTED_FORMAT = "2"
# A differential task's CPU limit is at least this multiple of its canonical solution's CPU
# time (evalplus' ground-truth time factor), so slow-but-legitimate tasks keep a wide margin.
REFERENCE_CPU_FACTOR = 4.0


def cache_dir() -> Path:
    base = os.environ.get("CODEALIGN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "codealign"
    )
    return Path(base)


def _tests_key(problem: Problem) -> str:
    return f"{problem.benchmark}:{problem.task_id}"


def _differential_job(problem: Problem, expected: dict[str, list] | None) -> DifferentialJob:
    d = problem.differential
    assert d is not None
    return DifferentialJob(
        flavor=d.flavor,
        entry_point=problem.entry_point,
        base_inputs=d.base_inputs,
        plus_inputs=d.plus_inputs,
        atol=d.atol,
        output_not_none=d.output_not_none,
        base_expected=expected["base"] if expected else None,
        plus_expected=expected["plus"] if expected else None,
    )


def _fingerprint(problems: Sequence[Problem]) -> str:
    h = hashlib.sha256(_EXPECTED_FORMAT.encode())
    for p in problems:
        d = p.differential
        h.update(repr((p.task_id, p.canonical_solution, d.flavor if d else None, d.atol if d else None,
                       d.output_not_none if d else None)).encode())
        h.update(pickle.dumps((d.base_inputs, d.plus_inputs) if d else None, protocol=4))
    return h.hexdigest()[:24]


def expected_outputs(problems: Sequence[Problem], pool: SandboxPool) -> dict[str, dict[str, list]]:
    """Expected outputs of differential problems (canonical solution on every input),
    keyed by task id; computed once per data version and cached under ``cache_dir()``."""
    diff = [p for p in problems if p.differential is not None]
    if not diff:
        return {}
    by_benchmark: dict[str, list[Problem]] = {}
    for p in diff:
        by_benchmark.setdefault(p.benchmark, []).append(p)
    result: dict[str, dict[str, list]] = {}
    for benchmark, group in by_benchmark.items():
        path = cache_dir() / "expected" / f"{benchmark}-{_fingerprint(group)}.pkl"
        if path.is_file():
            with path.open("rb") as f:
                result.update(pickle.load(f))
            continue
        print(f"codealign: computing expected outputs for {benchmark} ({len(group)} tasks, cached afterwards)",
              file=sys.stderr)
        jobs = [
            (Job(p.task_id, -1, p.canonical_solution, "record", _tests_key(p) + "#record", p.benchmark),
             _differential_job(p, None))
            for p in group
        ]
        outputs: dict[str, dict[str, list]] = {}
        for verdict in pool.run(jobs, _RECORD_LIMITS):
            if verdict.status != "passed":
                raise RuntimeError(
                    f"{benchmark} {verdict.task_id}: canonical solution failed while computing expected "
                    f"outputs ({verdict.status}: {verdict.detail})"
                )
            outputs[verdict.task_id] = {**verdict.outputs, "cpu_s": verdict.cpu_s}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(outputs, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        result.update(outputs)
    return result


def build_job(problem: Problem, sample: Sample, reference_cpu_s: float | None = None) -> Job:
    """The program that judges one sample of one problem."""
    solution = sample.solution if sample.solution is not None else problem.solution(sample.completion or "")
    if problem.differential is not None:
        min_cpu = REFERENCE_CPU_FACTOR * reference_cpu_s if reference_cpu_s else None
        return Job(sample.task_id, sample.index, solution, "differential", _tests_key(problem), problem.benchmark,
                   min_cpu)
    return Job(sample.task_id, sample.index, problem.test_program(solution), "script", None, problem.benchmark)


def execute(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    limits: Limits | None = None,
    workers: int | None = None,
    strict_isolation: bool = False,
    progress: bool = False,
) -> list[Verdict]:
    """Run every sample against its problem's tests in the sandbox; verdicts in sample order.

    ``problems`` may mix benchmarks; samples refer to problems by ``task_id`` (unique within
    the given problems)."""
    by_id = {p.task_id: p for p in problems}
    for s in samples:
        if s.task_id not in by_id:
            raise KeyError(f"sample refers to unknown task_id {s.task_id!r}")
    limits = limits or Limits()
    with SandboxPool(workers, limits, strict_isolation) as pool:
        needed = list({s.task_id: by_id[s.task_id] for s in samples if by_id[s.task_id].differential}.values())
        expected = expected_outputs(needed, pool)
        jobs = []
        for s in samples:
            p = by_id[s.task_id]
            exp = expected.get(p.task_id)
            tests = _differential_job(p, exp) if exp is not None else None
            jobs.append((build_job(p, s, exp["cpu_s"] if exp else None), tests))
        verdicts = list(_with_progress(pool.run(jobs, limits), len(jobs), progress))
    order = {(s.task_id, s.index): i for i, s in enumerate(samples)}
    verdicts.sort(key=lambda v: order[(v.task_id, v.sample_index)])
    return verdicts


def _with_progress(it: Iterator[Verdict], total: int, enabled: bool) -> Iterator[Verdict]:
    if not enabled:
        yield from it
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("executing"), BarColumn(), MofNCompleteColumn(), TextColumn("passed {task.fields[ok]}"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("exec", total=total, ok=0)
        ok = 0
        for verdict in it:
            ok += verdict.passed
            bar.update(task, advance=1, ok=ok)
            yield verdict
