"""Verdict fidelity with evalplus on the "+" benchmarks: each input gets its own CPU limit
(max(1 s, 4 x the canonical solution's CPU time on it)), so a correct solution that is somewhat
slower than the ground truth passes, a solution that is too slow on one input fails naming
that input, and neither depends on how busy the machine is."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.evaluation.execute import (
    MIN_INPUT_CPU_S,
    TASK_CPU_CAP_S,
    execute,
    input_limits,
)
from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.registry import load_benchmark

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _spin() -> None:
    while True:
        pass


def _slow_on_largest(spin_s: float) -> tuple[Sample, str]:
    """A correct HumanEval/0 that burns ``spin_s`` CPU seconds on its largest input only, and
    the prefix of the verdict detail that names that input."""
    zero = {p.task_id: p for p in load_benchmark("humaneval+")}["HumanEval/0"]
    inputs = [*zero.differential.base_inputs, *zero.differential.plus_inputs]
    largest = max(len(repr(i)) for i in inputs)
    first = next(i for i, inp in enumerate(inputs) if len(repr(inp)) == largest)
    group, index = ("base", first) if first < len(zero.differential.base_inputs) else (
        "plus", first - len(zero.differential.base_inputs))
    solution = zero.prompt + (
        "    import time\n"
        f"    if len(repr((numbers, threshold))) >= {largest}:\n"
        "        start = time.process_time()\n"
        f"        while time.process_time() - start < {spin_s}:\n"
        "            pass\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")
    return Sample("HumanEval/0", 0, solution=solution), f"{group} input #{index}:"


SPIN_PER_CALL = ("    import time\n    start = time.process_time()\n"
                 "    while time.process_time() - start < 0.03:\n        pass\n")


def _cases():
    plus = load_benchmark("humaneval+")
    # Correct and slow on every input: 0.03 s of CPU per call, ~5.7 s over HumanEval/96's 190
    # inputs (past a 3 s whole-program budget), each far below its >= 1 s per-input limit.
    slow_everywhere = SPIN_PER_CALL + {p.task_id: p for p in plus}["HumanEval/96"].canonical_completion
    # Correct, but burns ~4 s of CPU on the largest input only: past its limit (a few hundred
    # milliseconds of reference time x 4, at least 1 s), far inside the task's whole budget.
    slow_on_largest, named = _slow_on_largest(4)
    return plus, [Sample("HumanEval/96", 0, completion=slow_everywhere), slow_on_largest], named


def test_slow_but_correct_passes_and_slow_on_one_input_fails_naming_it():
    plus, samples, named = _cases()
    slow_correct, slow_on_one = execute(plus, samples)
    assert slow_correct.passed, slow_correct  # 'CPU limit 3s exceeded' under one whole-program budget
    assert slow_correct.cpu_s > 3, "the slow HumanEval/96 solution is meant to exceed 3 s in all"
    assert slow_on_one.status == "timeout" and slow_on_one.detail.startswith(named), slow_on_one
    assert "CPU limit" in slow_on_one.detail and "for this input exceeded" in slow_on_one.detail


def test_verdicts_do_not_change_with_the_cores_saturated():
    """Verdicts far from their limits do not move under load: 0.25 s of CPU on an input whose
    limit is at least 1 s passes, 4 s fails."""
    plus = load_benchmark("humaneval+")
    samples = [_slow_on_largest(0.25)[0], _slow_on_largest(4)[0]]
    samples[0] = Sample("HumanEval/0", 1, solution=samples[0].solution)
    quiet = [(v.status, v.detail) for v in execute(plus, samples)]
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(4)]
    for p in busy:
        p.start()
    try:
        loaded = [(v.status, v.detail) for v in execute(plus, samples)]
    finally:
        for p in busy:
            p.kill()
            p.join()
    assert loaded == quiet
    assert [status for status, _ in quiet] == ["passed", "timeout"]


def test_per_input_limits_follow_evalplus():
    assert input_limits([0.0, 0.1, 0.5]) == [MIN_INPUT_CPU_S, MIN_INPUT_CPU_S, 2.0]
    assert TASK_CPU_CAP_S == 60.0


def _venv_under_tmp(root: Path, with_numpy: bool) -> Path:
    """A virtual environment in ``root`` (pytest's tmp dirs are under /tmp) whose only numpy,
    if any, is its own: copied from this interpreter's."""
    import numpy

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    if with_numpy:
        site = next((venv / "lib").glob("python*/site-packages"))
        source = Path(numpy.__file__).resolve().parent
        for path in [source, *source.parent.glob("numpy.libs"), *source.parent.glob("numpy-*.dist-info")]:
            shutil.copytree(path, site / path.name, symlinks=True)
    return venv / "bin" / "python"


FLOAT_SOLUTIONS = {  # correct, but not bit-identical to the ground truth: compared within tolerance
    "HumanEval/21": ("    lo, hi = min(numbers), max(numbers)\n    scale = 1.0 / (hi - lo)\n"
                     "    return [(x - lo) * scale for x in numbers]\n"),
    "HumanEval/4": ("    import math\n    mean = math.fsum(numbers) / len(numbers)\n"
                    "    return math.fsum(abs(x - mean) for x in numbers) / len(numbers)\n"),
}


def test_python_installed_under_tmp_judges_float_answers_correctly(tmp_path, monkeypatch):
    """The sandbox gives each sample a fresh /tmp; a Python installed there must stay visible
    (read-only) to samples, or the float comparison's `import numpy` fails and correct answers
    are judged wrong.  Files a sample leaves beside the kept directories do not survive it."""
    python = _venv_under_tmp(tmp_path, with_numpy=True)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    plus = load_benchmark("humaneval+")
    by_id = {p.task_id: p for p in plus}
    samples = [Sample(t, 0, completion=body) for t, body in FLOAT_SOLUTIONS.items()]
    verdicts = execute([by_id[t] for t in FLOAT_SOLUTIONS] + [p for p in plus if p.task_id not in FLOAT_SOLUTIONS],
                       samples, workers=1)
    assert [(v.task_id, v.status, v.detail) for v in verdicts] == [(t, "passed", "") for t in FLOAT_SOLUTIONS]

    beside = tmp_path / "leaked.txt"  # next to the kept venv: on the sample's fresh tmpfs (and not its to write)
    top = f"/tmp/leaked-{tmp_path.name}"  # the scratch root: writable, gone with the sample
    from codealign.tasks.problems.problem import Problem

    # the samples write and look (test code runs in the judge, so the programs do it in f)
    write = (f"def f():\n    try:\n        open({str(beside)!r}, 'w').write('x')\n    except PermissionError:\n"
             f"        pass\n    open({top!r}, 'w').write('x')\n")
    read = f"import os\ndef f():\n    return os.path.exists({str(beside)!r}) or os.path.exists({top!r})\n"
    writer = Problem("t", "t/write", "", "", "f", "", test="f()", completion_is_program=True)
    reader = Problem("t", "t/read", "", "", "f", "", test="assert f() is False", completion_is_program=True)
    verdicts = execute([writer, reader], [Sample("t/write", 0, solution=write), Sample("t/read", 0, solution=read)],
                       workers=1, use_reference=False)
    assert [v.status for v in verdicts] == ["passed", "passed"], verdicts
    assert not beside.exists() and not Path(top).exists()


def test_an_environment_samples_cannot_use_is_an_error_not_a_verdict(tmp_path, monkeypatch):
    python = _venv_under_tmp(tmp_path, with_numpy=False)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    from codealign.tasks.problems.problem import Problem

    problem = Problem("t", "t/0", "", "", "f", "", test="pass", completion_is_program=True)
    with pytest.raises(RuntimeError, match="sandbox self-check failed: .*numpy"):
        execute([problem], [Sample("t/0", 0, solution="")], workers=1, use_reference=False)
