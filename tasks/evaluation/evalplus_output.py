"""evalplus-compatible evaluation output: ``samples.jsonl`` and ``eval_results.json``.

Why: users check codealign against evalplus, and feed its sample files to evalplus' own
evaluator.  evalplus takes a sample's ``solution`` whenever the key exists (and stops at a null
one: "Solution must be a string!"), so codealign's ``samples.jsonl`` holds ``task_id`` and
``solution`` (the full program that was judged) and nothing else; the prompt, the raw text and
what was extracted from it go to ``generations.jsonl``.  ``eval_results.json`` has evalplus'
shape (``eval``: for each task, each sample's ``base_status`` and ``plus_status``) and a pass@k
summary for the base tests and for base + extra tests, from the one sample set.

The "+" benchmarks judge base inputs, then plus inputs, and stop at the first failure, as
evalplus judges each group: a sample that fails a plus input passed every base input.  One that
fails a base input fails base + extra whatever its plus inputs would give, and is reported
``plus_status: fail`` (evalplus runs that group anyway; the pass@k it reports is the same).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from codealign.tasks.evaluation.scoring import pass_at_k
from codealign.tasks.generation.samples import SampleRecord
from codealign.tasks.problems.problem import Problem

PASS, FAIL, TIMEOUT = "pass", "fail", "timeout"  # evalplus' status words


def judged_program(problem: Problem, record: SampleRecord) -> str:
    """The program a sample stands for, as the sandbox ran it ("" when nothing was generated)."""
    if record.solution is not None:
        return record.solution
    return problem.solution(record.completion or "")


def samples_lines(problems: dict[str, Problem], records: Sequence[SampleRecord]) -> list[dict[str, str]]:
    """One ``{"task_id", "solution"}`` line per sample.  A sample judged on two benchmarks that
    share task ids and prompts (HumanEval and HumanEval+: sampled once) is written once, so the
    file is a complete sample set for either benchmark's evalplus dataset."""
    lines: dict[tuple[str, int, str], dict[str, str]] = {}
    for r in records:
        program = judged_program(problems[_key(r.benchmark, r.task_id)], r)
        lines.setdefault((r.task_id, r.index, program), {"task_id": r.task_id, "solution": program})
    return list(lines.values())


def statuses(problem: Problem, verdict: dict[str, Any]) -> tuple[str, str | None]:
    """``(base_status, plus_status)`` of one verdict; plus_status is None for benchmarks without
    extra tests."""
    if verdict["passed"]:
        return PASS, PASS if problem.differential is not None else None
    status = TIMEOUT if verdict.get("status") == "timeout" else FAIL
    if problem.differential is None:
        return status, None
    if str(verdict.get("detail", "")).startswith("plus input"):
        return PASS, status
    return status, FAIL


def eval_results(benchmark: str, problems: Sequence[Problem], records: Sequence[SampleRecord],
                 verdicts: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """One benchmark's results in evalplus' ``eval_results.json`` shape, plus ``pass_at_k``."""
    by_id = {p.task_id: p for p in problems}
    verdict_of = {(v["task_id"], v["sample_index"]): v for v in verdicts if v.get("benchmark", benchmark) == benchmark}
    evals: dict[str, list[dict[str, Any]]] = {p.task_id: [] for p in problems}
    for r in sorted((r for r in records if r.benchmark == benchmark), key=lambda r: (r.task_id, r.index)):
        problem = by_id[r.task_id]
        base, plus = statuses(problem, verdict_of[(r.task_id, r.index)])
        evals[r.task_id].append({"task_id": r.task_id, "solution": judged_program(problem, r),
                                 "base_status": base, "plus_status": plus})
    summary: dict[str, dict[str, float]] = {"base": {}}
    has_plus = any(p.differential is not None for p in problems)
    if has_plus:
        summary["plus"] = {}
    for k in ks:
        if not evals or any(len(rows) < k for rows in evals.values()):
            continue
        summary["base"][f"pass@{k}"] = _mean_pass_at_k(evals, k, lambda row: row["base_status"] == PASS)
        if has_plus:
            summary["plus"][f"pass@{k}"] = _mean_pass_at_k(
                evals, k, lambda row: row["base_status"] == PASS and row["plus_status"] == PASS)
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "benchmark": benchmark, "eval": evals, "pass_at_k": summary}


def results_file_name(benchmark: str, benchmarks: Sequence[str]) -> str:
    """``eval_results.json`` for a one-benchmark run (evalplus' workflow); one file per
    benchmark, ``eval_results.<benchmark>.json``, when a run has several (task ids repeat)."""
    return "eval_results.json" if len(benchmarks) == 1 else f"eval_results.{benchmark}.json"


def _mean_pass_at_k(evals: dict[str, list[dict[str, Any]]], k: int, ok: Any) -> float:
    values = [pass_at_k(len(rows), sum(1 for row in rows if ok(row)), k) for rows in evals.values()]
    return sum(values) / len(values)


def _key(benchmark: str, task_id: str) -> str:
    return f"{benchmark}\0{task_id}"


def problem_index(problems: dict[str, list[Problem]]) -> dict[str, Problem]:
    """Problems by (benchmark, task id), for :func:`samples_lines`."""
    return {_key(name, p.task_id): p for name, group in problems.items() for p in group}
