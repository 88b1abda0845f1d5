"""Intervals over tasks and `codealign compare`: a difference is beyond noise only when its
paired bootstrap interval excludes 0; cells computed once and reused are marked, not called
"no change"; the command prints the table and its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.lineage import ArtifactMeta
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.evaluation.intervals import mean_interval, paired_difference, per_task_pass1
from codealign.tasks.sweeps.compare import compare_runs

REPO = Path(__file__).resolve().parents[2]


def test_a_mean_over_few_tasks_has_a_wide_interval_and_over_many_a_narrow_one():
    few = mean_interval([1.0, 0.0] * 10)
    many = mean_interval([1.0, 0.0] * 500)
    assert few.estimate == many.estimate == 0.5
    assert few.low < many.low < 0.5 < many.high < few.high
    assert few.high - few.low > 3 * (many.high - many.low)  # ~1/sqrt(n)
    assert mean_interval([1.0, 0.0] * 10) == few  # seeded: the same interval every time


def test_a_paired_difference_is_beyond_noise_only_when_its_interval_excludes_zero():
    tasks = [f"t{i}" for i in range(300)]
    before = {t: float(i % 2) for i, t in enumerate(tasks)}
    gained = {t: 1.0 if i % 2 or i % 10 == 0 else 0.0 for i, t in enumerate(tasks)}  # 30 tasks more pass
    d = paired_difference(before, gained)
    assert d.estimate == pytest.approx(0.1) and d.excludes_zero and d.low > 0
    noisy = {t: 1.0 if (i % 2 == 1) != (i % 20 in (0, 1)) else 0.0 for i, t in enumerate(tasks)}  # 15 flip each way
    n = paired_difference(before, noisy)
    assert n.estimate == pytest.approx(0.0) and not n.excludes_zero
    four_of_sixty = paired_difference({f"t{i}": 0.5 for i in range(60)},
                                      {f"t{i}": 1.0 if i < 4 else 0.5 for i in range(60)})
    assert four_of_sixty.estimate == pytest.approx(2 / 60) and four_of_sixty.low >= 0 and four_of_sixty.tasks == 60
    assert paired_difference({"a": 0.0, "b": 1.0}, {"b": 1.0, "c": 0.0}).tasks == 1  # shared tasks only
    with pytest.raises(ValueError, match="share no task"):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_per_task_pass1_is_each_tasks_passing_fraction():
    verdicts = [{"task_id": "a", "passed": True}, {"task_id": "a", "passed": False}, {"task_id": "b", "passed": True}]
    assert per_task_pass1(verdicts) == {"a": 0.5, "b": 1.0}


def _eval_run(store: ArtifactStore, run_id: str, units: dict[tuple[str, str], tuple[str, list[bool]]]) -> None:
    """An evaluation run's records: per (checkpoint, benchmark), its unit key and task passes."""
    meta = ArtifactMeta("test", {"task": "test"})
    rows = []
    for (checkpoint, benchmark), (unit, passes) in units.items():
        key = layout.unit_artifact(unit, "verdicts.jsonl")
        if not store.exists(key):
            store.put_jsonl(key, [{"task_id": f"{benchmark}/{i}", "passed": p} for i, p in enumerate(passes)], meta)
        rows.append({"checkpoint": checkpoint, "benchmark": benchmark, "mode": "command", "unit": unit,
                     "pass@1": sum(passes) / len(passes)})
    runs.write_manifest(store, runs.Manifest(run_id, "evaluate-checkpoints", {}, []), (), meta.producer)
    runs.write_results(store, run_id, rows, (), meta.producer)


@pytest.fixture
def two_runs(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    base = [i % 2 == 0 for i in range(200)]
    better = [p or i < 80 for i, p in enumerate(base)]  # 40 more tasks pass (the odd ones below 80)
    _eval_run(store, "night-1", {("base", "toy"): ("u-base-toy", base), ("sft", "toy"): ("u-sft-1", base),
                                 ("old", "toy"): ("u-old", base)})
    _eval_run(store, "night-2", {("base", "toy"): ("u-base-toy", base), ("sft", "toy"): ("u-sft-2", better),
                                 ("new", "toy"): ("u-new", base)})
    return store


def test_compare_marks_reused_cells_and_measures_the_changed_ones(two_runs):
    rows = {r.cell["checkpoint"]: r for r in compare_runs(two_runs, "night-1", "night-2")}
    assert rows["base"].reused and rows["base"].delta is None and "reused" in rows["base"].note
    sft = rows["sft"]
    assert sft.delta.estimate == pytest.approx(0.2) and sft.delta.excludes_zero and not sft.reused
    assert (sft.a, sft.b) == (0.5, 0.7)
    assert rows["old"].note == "only in night-1" and rows["new"].note == "only in night-2"


def test_the_compare_command_prints_the_table_and_its_json(two_runs, tmp_path):
    env = {**os.environ, "COLUMNS": "220"}
    base = [sys.executable, "-m", "codealign", "compare", "night-1", "night-2", "--store", two_runs.root]
    table = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if "│ sft" in x)
    assert "+20.0 [" in line and "pts (200 tasks)" in line and line.rstrip(" │").endswith("yes")
    as_json = subprocess.run([*base, "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    cells = {c["checkpoint"]: c for c in json.loads(as_json.stdout)}
    assert cells["sft"]["delta"]["beyond_noise"] and cells["base"]["reused"]
    missing = subprocess.run([*base[:4], "nope", "night-2", "--store", two_runs.root], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=120)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr + missing.stdout
