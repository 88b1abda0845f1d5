"""The `codealign exec` / `score` commands, run as a user would, including bad input; an
evaluation run from the command line with no server or cluster given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import assert_quiet, flow_command
from toy_checkpoints import make_checkpoints

from codealign.tasks.problems.registry import load_benchmark

REPO = Path(__file__).resolve().parents[2]


def codealign(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codealign", *args], capture_output=True, text=True, cwd=cwd)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture()
def humaneval_samples(tmp_path) -> Path:
    problems = load_benchmark("humaneval")[:3]
    lines = []
    for p in problems:
        lines.append(json.dumps({"task_id": p.task_id, "completion": p.canonical_completion}))
        lines.append(json.dumps({"task_id": p.task_id, "completion": "    return None\n"}))
    # evalplus format for the first task
    lines.append(json.dumps({"task_id": problems[0].task_id, "solution": problems[0].canonical_solution}))
    return _write_lines(tmp_path / "samples.jsonl", lines)


def test_exec_then_score(tmp_path, humaneval_samples):
    verdicts = tmp_path / "verdicts.jsonl"
    r = codealign("exec", "--benchmark", "humaneval", "--samples", str(humaneval_samples), "--out", str(verdicts))
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert [v["passed"] for v in records] == [True, False, True, False, True, False, True]
    assert [v["sample_index"] for v in records] == [0, 1, 0, 1, 0, 1, 2]
    assert set(records[0]) >= {"task_id", "sample_index", "status", "passed", "cpu_s", "wall_s", "detail"}

    r = codealign("score", "--verdicts", str(verdicts), "--k", "1,2")
    assert r.returncode == 0, r.stderr
    scores = json.loads(verdicts.with_suffix(".scores.json").read_text())
    assert scores["benchmarks"]["humaneval"]["pass@1"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
    assert "pass@1" in r.stdout


BAD_LINES = {
    "malformed_json": ('{"task_id": "HumanEval/0", "completion": ', r"samples\.jsonl:2: malformed JSON"),
    "unknown_task": ('{"task_id": "HumanEval/999", "completion": "x"}', r"samples\.jsonl:2: unknown task_id"),
    "missing_field": ('{"task_id": "HumanEval/0"}', r"samples\.jsonl:2: missing field 'completion'"),
    "not_an_object": ("[1, 2]", r"samples\.jsonl:2: expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_samples_exit_2_naming_file_and_line(tmp_path, case):
    line, pattern = BAD_LINES[case]
    samples = _write_lines(tmp_path / "samples.jsonl", ['{"task_id": "HumanEval/0", "completion": "  pass"}', line])
    out = tmp_path / "verdicts.jsonl"
    r = codealign("exec", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(out))
    assert r.returncode == 2
    import re

    assert re.search(pattern, r.stderr.replace("\n", "")), r.stderr
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


def test_unknown_benchmark_and_unreadable_file(tmp_path):
    r = codealign("exec", "--benchmark", "nope", "--samples", "x.jsonl", "--out", str(tmp_path / "v.jsonl"))
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr
    r = codealign("exec", "--benchmark", "humaneval", "--samples", str(tmp_path / "missing.jsonl"),
                  "--out", str(tmp_path / "v.jsonl"))
    assert r.returncode == 2 and "missing.jsonl" in r.stderr and "cannot read" in r.stderr


def test_score_rejects_bad_verdicts(tmp_path):
    bad = _write_lines(tmp_path / "v.jsonl", ['{"task_id": "a", "passed": true}', '{"task_id": "a"}'])
    r = codealign("score", "--verdicts", str(bad))
    assert r.returncode == 2 and "v.jsonl:2: missing field 'passed'" in r.stderr.replace("\n", "")
    assert not (tmp_path / "v.scores.json").exists()


@pytest.mark.parametrize("args, message", [
    (["exec", "--benchmark", "nope", "--samples", "/dev/null", "--out", "{tmp}/o.jsonl"], "unknown benchmark 'nope'"),
    (["score", "--verdicts", "{tmp}/missing.jsonl"], "missing.jsonl: cannot read verdicts file"),
    (["evaluate", "--model", "{tmp}/no-model", "--benchmarks", "humaneval"], "no such local model directory"),
    (["evaluate-checkpoints", "--checkpoints", "{tmp}/no-ckpt", "--store", "{tmp}/s"], "no such checkpoint"),
    (["generate", "--model", "{tmp}/no-model", "--store", "{tmp}/s"], "no such local model directory"),
    (["train", "--stage", "sft", "--pathway", "fta", "--model", "{tmp}/no-model", "--dataset",
      "{tmp}/missing.jsonl", "--store", "{tmp}/s"], "missing.jsonl"),
    (["sweep", "--preset", "nope", "--store", "{tmp}/s"], "no preset 'nope'"),
    (["report", "nope", "--store", "{tmp}/s"], "no run 'nope'"),
    (["resume", "nope", "--store", "{tmp}/s"], "no run 'nope'"),
    (["lineage", "nope://x", "--store", "{tmp}/s"], "is not in the store"),
    (["run-submitted", "nope", "{tmp}/c.json", "--run-id", "r"], "nope: no such flow"),
], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_every_command_says_bad_input_in_one_line_and_exits_2(tmp_path, args, message):
    """codealign's error root is caught once, where the CLI starts: one line, exit 2, no trace."""
    from typer.testing import CliRunner

    from codealign import cli

    result = CliRunner().invoke(cli.app, [a.format(tmp=tmp_path) for a in args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("codealign: error:") and message in lines[0], result.output


def test_a_bug_is_one_line_and_exit_1_and_its_traceback_needs_verbose(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from codealign import cli
    from codealign.tasks.evaluation import scoring

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(scoring, "score", broken)
    verdicts = _write_lines(tmp_path / "v.jsonl", [json.dumps({"task_id": "HumanEval/0", "passed": True})])
    quiet = CliRunner().invoke(cli.app, ["score", "--verdicts", str(verdicts)])
    assert quiet.exit_code == 1 and quiet.output.strip().splitlines() == [
        "codealign: internal error: KeyError: 'a bug' (run with --verbose for the traceback)"]
    loud = CliRunner().invoke(cli.app, ["--verbose", "score", "--verdicts", str(verdicts)])
    assert isinstance(loud.exception, KeyError)  # the traceback is the user's to see


@pytest.mark.slow
def test_cli_run_without_a_prefect_server_or_cluster_starts_one_of_each_for_the_run(tmp_path, toy_model_paths):
    """No PREFECT_API_URL and no --ray-address: the CLI starts one temporary Prefect server and a
    Ray instance of its own for the run, and the Ray workers report to that server (they used to
    start one each); the terminal stays quiet, and every task run is recorded on the server."""
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [1, 2])
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect-home"), RAY_DEDUP_LOGS="0")
    cmd = flow_command(store, train, "", "one-server")
    cmd = cmd[: cmd.index("--ray-address")] + cmd[cmd.index("--run-id"):]
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    log = store / "runs" / "one-server" / "terminal.log"
    assert_quiet(r, log, units=4)
    starts = [line for line in log.read_text().splitlines() if "Starting temporary server" in line]
    assert len(starts) == 1, starts  # the workers' output reaches the log too: none started its own

    # the run's records, read back through a server over the same database
    probe = ("import asyncio, json\n"
             "from prefect.client.orchestration import get_client\n"
             "async def main():\n"
             "    async with get_client() as c:\n"
             "        (run,) = [r for r in await c.read_flow_runs() if r.flow_id]\n"
             "        tasks = await c.read_task_runs(limit=200)\n"
             "        print(json.dumps([[t.name.rsplit('-', 1)[0], t.flow_run_id == run.id, t.state_name]"
             " for t in tasks]))\n"
             "asyncio.run(main())\n")
    seen = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert seen.returncode == 0, seen.stderr[-3000:]
    task_runs = json.loads(seen.stdout.strip().splitlines()[-1])
    names = sorted(name for name, _, _ in task_runs)
    assert names.count("fingerprint") == 2 and names.count("execute-unit") == 4, names
    assert all(in_run and state == "Completed" for _, in_run, state in task_runs), task_runs
