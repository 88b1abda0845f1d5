"""Efficiency (tasks/evaluation/efficiency.py): through the real sandbox, on hand-made verdicts,
and the runner's check of the sample's reported CPU time."""

from __future__ import annotations

import json
import os

import pytest

from codealign.tasks.evaluation.efficiency import (
    FLOOR_S,
    efficiency_scores,
    label_efficiency,
    sample_efficiency,
)
from codealign.tasks.evaluation.scoring import score
from codealign.tasks.problems.problem import DifferentialTests, Problem
from codealign.tasks.sandbox.records import Job, SampleLimits, Verdict

PROMPT = 'def squares(n):\n    """Sum of i * i for i below n."""\n'
CANONICAL = "    return sum(i * i for i in range(n))\n"
# Correct, but burns CPU on every call.
SLOW = "    for _ in range(600_000):\n        pass\n    return sum(i * i for i in range(n))\n"
SQUARES = Problem("toy-plus", "sq/0", PROMPT, "", "squares", CANONICAL,
                  differential=DifferentialTests("humaneval", [[30_000], [40_000]], [[50_000], [60_000]], 0.0))


def test_real_sandbox_slow_solution_scores_below_canonical(tmp_path, monkeypatch):
    from codealign.tasks.evaluation.execute import execute
    from codealign.tasks.generation.samples import Sample

    monkeypatch.setenv("CODEALIGN_CACHE_DIR", str(tmp_path))
    completions = [CANONICAL, SLOW, "    return 0\n"]
    samples = [Sample("sq/0", i, completion=c) for i, c in enumerate(completions)]
    verdicts = [v.to_json() for v in execute([SQUARES], samples, workers=1)]
    assert [v["passed"] for v in verdicts] == [True, True, False]
    assert verdicts[0]["tests_cpu_s"] > 0 and verdicts[2]["tests_cpu_s"] is None
    assert verdicts[0]["tests_cpu_s"] <= verdicts[0]["cpu_s"] + 0.05
    # No references given: read from the cache execute() filled.
    labelled = label_efficiency([SQUARES], verdicts)
    canonical, slow, failing = (v["efficiency"] for v in labelled)
    print(f"canonical {canonical:.3f} slow {slow:.3f}", [v["tests_cpu_s"] for v in labelled])
    assert 0.3 < canonical < 3
    assert slow < 0.5
    assert failing is None
    scores = score(labelled, [1])
    assert scores["benchmarks"]["toy-plus"]["efficiency"]["n_tasks"] == 1
    assert scores["benchmarks"]["toy-plus"]["efficiency"]["mean"] == pytest.approx((canonical + slow) / 2)
    assert scores["overall"]["efficiency"]["instructions"].startswith("instructions: ")


def test_script_problems_compare_whole_processes_and_other_languages_get_none():
    script = Problem("toy", "t/0", "", "", "f", "", test="assert f() == 1", completion_is_program=True)
    ok = {"task_id": "t/0", "passed": True, "cpu_s": 0.04}
    assert sample_efficiency(script, ok, {"cpu_s": 0.02}) == pytest.approx(0.5)
    assert sample_efficiency(script, {**ok, "passed": False}, {"cpu_s": 0.02}) is None
    assert sample_efficiency(script, {**ok, "cpu_s": 0.0}, {"cpu_s": 0.0}) == 1.0  # both floored
    assert sample_efficiency(script, {**ok, "cpu_s": 0.0}, {"cpu_s": 0.01}) == pytest.approx(0.01 / FLOOR_S)
    rust = Problem("toy-rs", "r/0", "", "", "f", "", language="rust")
    assert sample_efficiency(rust, ok, {"cpu_s": 0.02}) is None
    diff = {"base_cpu": [0.01, 0.01], "plus_cpu": [0.02], "cpu_s": 9.0}
    assert sample_efficiency(SQUARES, {**ok, "tests_cpu_s": 0.08}, diff) == pytest.approx(0.5)
    assert sample_efficiency(SQUARES, ok, diff) is None  # an older verdict without tests_cpu_s
    labelled = label_efficiency([script, rust], [{"task_id": "r/0", **ok}, {"task_id": "t/9", **ok}], {})
    assert [v["efficiency"] for v in labelled] == [None, None]


def test_aggregation_mean_per_task_then_over_tasks():
    rows = [
        {"benchmark": "a", "task_id": "1", "passed": True, "efficiency": 1.0},
        {"benchmark": "a", "task_id": "1", "passed": True, "efficiency": 0.5},
        {"benchmark": "a", "task_id": "1", "passed": False, "efficiency": None},
        {"benchmark": "a", "task_id": "2", "passed": True, "efficiency": 2.0},
        {"benchmark": "a", "task_id": "3", "passed": False, "efficiency": None},  # no passing sample
        {"benchmark": "b", "task_id": "1", "passed": True, "efficiency": 0.25},
        {"benchmark": "c", "task_id": "1", "passed": False, "efficiency": None},
        {"benchmark": "d", "task_id": "1", "passed": True},  # not labelled
    ]
    per_benchmark, overall = efficiency_scores(rows)
    assert per_benchmark == {"a": {"mean": 1.375, "n_tasks": 2}, "b": {"mean": 0.25, "n_tasks": 1},
                             "c": {"mean": None, "n_tasks": 0}}
    assert overall["mean"] == pytest.approx((0.75 + 2.0 + 0.25) / 3) and overall["n_tasks"] == 3
    scores = score(rows, [1])
    assert scores["benchmarks"]["a"]["efficiency"] == {"mean": 1.375, "n_tasks": 2}
    assert "efficiency" not in scores["benchmarks"]["d"]
    assert scores["overall"]["efficiency"]["n_tasks"] == 3
    assert "efficiency" not in score([{k: v for k, v in r.items() if k != "efficiency"} for r in rows], [1])["overall"]


def test_verdict_json_round_trip_with_tests_cpu():
    v = Verdict("sq/0", 3, "passed", True, 0.5, 0.7, benchmark="b", tests_cpu_s=0.125)
    d = json.loads(json.dumps(v.to_json()))
    assert d["tests_cpu_s"] == 0.125
    assert Verdict(**d) == v


LIMITS = SampleLimits(cpu_s=3, wall_s=10, memory_mb=512, file_size_mb=8, max_processes=8, output_bytes=1000)


def _judge(outcome, in_process: bool = False, cpu: float = 0.5) -> Verdict:
    from codealign.tasks.sandbox.pool import _verdict
    from codealign.tasks.sandbox.runner import ExitReport

    job = Job("sq/0", 0, "", "script" if in_process else "differential", "k", "b")
    return _verdict(job, outcome, ExitReport(0, cpu, 0.6, b"", False, LIMITS), in_process)  # exit code 0


def test_tests_cpu_is_the_judges_measurement():
    from codealign.tasks.sandbox.judge import Outcome

    good = _judge(Outcome("passed", tests_cpu_s=0.25))
    assert good.passed and good.tests_cpu_s == 0.25 and not good.judged_in_process
    assert _judge(Outcome("passed")).tests_cpu_s is None


def test_failed_verdict_never_carries_tests_cpu():
    from codealign.tasks.sandbox.judge import Outcome

    v = _judge(Outcome("failed", "wrong output", tests_cpu_s=0.1))
    assert not v.passed and v.tests_cpu_s is None


def test_a_sample_that_judged_itself_says_so_and_needs_a_clean_exit():
    from codealign.tasks.sandbox.judge import Outcome

    v = _judge(Outcome("passed"), in_process=True)
    assert v.passed and v.judged_in_process
    assert not _judge(None, in_process=True).passed  # no verdict frame: never passed


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="probe needs a known syscall number")
def test_instructions_note_says_why():
    from codealign.tasks.evaluation.efficiency import instructions_note

    note = instructions_note()
    assert note.startswith("instructions: not ")


def test_score_command_prints_efficiency(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    verdicts = tmp_path / "verdicts.jsonl"
    rows = [{"task_id": "t/0", "sample_index": 0, "passed": True, "benchmark": "b", "efficiency": 0.5},
            {"task_id": "t/1", "sample_index": 0, "passed": True, "benchmark": "b", "efficiency": 1.5}]
    verdicts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "-m", "codealign", "score", "--verdicts", str(verdicts), "--k", "1"],
                       check=False, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert "efficiency b: 1.000 (n_tasks=2)" in r.stdout, r.stdout
    assert "instructions: not" in r.stdout
