"""What the out-of-process judge costs: the same programs judged by two checkouts of codealign
(``--before``, default the last commit before the judge moved out of the sample, against this
checkout), on the same machine in one run, HumanEval and HumanEval+.  Prints after / before.

Why: since issue 22 the sample only computes and the judge compares, one call (one input) at a
time over a socket, with the judge reading the sample's CPU clock between results.  That is
more messages than running the whole check inside the sample; this says how much slower (or
not) a sweep's evaluation becomes.  The target is after / before >= 0.85 (throughput).

Both checkouts judge the same samples (every task's canonical completion plus one wrong one,
``tasks/problems/mutants.py``), each in its own subprocess with its own cache directory (their
reference caches have different formats), alternating before/after ``--rounds`` times; the
best time of each is kept.  Reference outputs are computed before the timing.

Run: ``CODEALIGN_DATA_DIR=../shared/datasets python benchmarks/judge_cost.py [--limit N] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
BEFORE = "b89477c"  # main just before the judge left the sample's process
BENCHMARKS = ("humaneval", "humaneval+")

# Run inside each checkout: judge the samples in the given file, print seconds and verdicts.
_CHILD = r"""
import json, sys, time
from codealign.tasks.problems.registry import load_benchmark
from codealign.tasks.generation.samples import Sample
try:
    from codealign.tasks.evaluation.execute import execute
except ImportError:  # a checkout from before the import-graph change
    from codealign.tasks.sandbox.execute import execute
spec = json.load(open(sys.argv[1]))
problems = load_benchmark(spec["benchmark"])
wanted = {s[0] for s in spec["samples"]}
problems = [p for p in problems if p.task_id in wanted]
samples = [Sample(t, i, c) for t, i, c in spec["samples"]]
execute(problems, samples[:1])  # reference outputs and the first worker start, outside the timing
start = time.perf_counter()
verdicts = execute(problems, samples)
print(json.dumps({"seconds": time.perf_counter() - start, "passed": [v.passed for v in verdicts]}))
"""


def build_samples(benchmark: str, limit: int | None) -> list[tuple[str, int, str]]:
    sys.path[:0] = [str(_ROOT)]
    from codealign.tasks.problems.mutants import wrong_solution
    from codealign.tasks.problems.registry import load_benchmark

    samples = []
    for p in load_benchmark(benchmark)[:limit]:
        samples.append((p.task_id, 0, p.canonical_completion))
        samples.append((p.task_id, 1, wrong_solution(p, 0)[len(p.prompt):]))
    return samples


def judge(checkout: Path, cache: Path, spec_file: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "CODEALIGN_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(spec_file)], cwd=checkout, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: judging failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks (quick run)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating before/after runs; best kept")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="codealign-judge-cost-") as tmp:
        work = Path(tmp)
        before = work / "before"
        subprocess.run(["git", "-C", str(_ROOT), "worktree", "add", "--detach", "-q", str(before), args.before],
                       check=True)
        try:
            print(f"before = {args.before}, after = this checkout; {os.cpu_count()} cores, "
                  f"workers = cores, best of {args.rounds}")
            for benchmark in BENCHMARKS:
                spec_file = work / f"{benchmark}.json"
                samples = build_samples(benchmark, args.limit)
                spec_file.write_text(json.dumps({"benchmark": benchmark, "samples": samples}))
                best = {"before": float("inf"), "after": float("inf")}
                passed: dict[str, list[bool]] = {}
                for _ in range(args.rounds):
                    for name, checkout in (("before", before), ("after", _ROOT)):
                        result = judge(checkout, work / f"cache-{name}", spec_file)
                        best[name] = min(best[name], result["seconds"])
                        passed[name] = result["passed"]
                n = len(samples)
                agree = sum(a == b for a, b in zip(passed["before"], passed["after"]))
                print(f"[{benchmark}] {n} programs ({n // 2} canonical + {n // 2} wrong)")
                for name in ("before", "after"):
                    print(f"  {name:6}: {n / best[name]:6.1f} programs/s ({best[name]:.1f} s; "
                          f"{sum(passed[name])} passed)")
                print(f"  throughput after / before: {best['before'] / best['after']:.2f}")
                print(f"  same verdicts: {agree}/{n}")
                for (task, index, _), a, b in zip(samples, passed["before"], passed["after"]):
                    if a != b:
                        print(f"    differ: {task} sample {index}: before passed={a}, after passed={b}")
        finally:
            subprocess.run(["git", "-C", str(_ROOT), "worktree", "remove", "--force", str(before)], check=False)


if __name__ == "__main__":
    main()
