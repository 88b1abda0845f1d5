"""`codealign sweep --plan`: each piece's work from the config and the data, what the store
holds, time from throughput earlier sweeps recorded, the critical path (no model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.lineage import ArtifactMeta
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.preferences.sources import load_source
from codealign.tasks.problems.registry import load_benchmark
from codealign.tasks.sweeps.config import load_preset
from codealign.tasks.sweeps.forecast import forecast

REPO = Path(__file__).resolve().parents[2]


def test_paper_003_plan_counts_what_is_known_and_says_unknown_for_the_rest(tmp_path):
    result = forecast(load_preset("paper-003", store=str(tmp_path / "store")))
    pieces = {p.label: p for p in result.pieces}
    assert len(pieces) == 10 + 1 + 130 * 2  # data jobs, the starting models' evaluation, stages and theirs
    data = pieces["llama3-8b-pta-s0"]
    seeds = len(load_source("toy-seeds").instructions)
    assert data.generation_requests == data.executions == seeds * 8  # toy-seeds x n
    starts = pieces["eval-starts"]
    assert starts.evaluation_units == 10 * 4  # 10 starting models x 4 benchmarks x Command mode
    # HumanEval and HumanEval+ share 163 of 164 prompts: sampled once, judged twice
    assert starts.generation_requests <= starts.generation_requests_separate - 10 * 163
    assert starts.executions == starts.generation_requests_separate
    dpo = pieces["llama3-8b-pta-s0-r16-functional-dpo"]
    assert (dpo.examples, dpo.epochs, dpo.generation_requests) == (None, 2, 0)  # pairs exist only after the judge
    assert pieces["eval-llama3-8b-pta-s0-r16-functional-dpo"].evaluation_units is None
    assert {p.in_store for p in result.pieces} == {"unknown"}  # hub weights are not on this machine
    assert result.critical_path == ["llama3-8b-pta-s0", "llama3-8b-pta-s0-r16-sft",
                                    "llama3-8b-pta-s0-r16-functional-dpo",
                                    "eval-llama3-8b-pta-s0-r16-functional-dpo"]
    assert result.critical_path_seconds is None and result.total("seconds") == (0, len(pieces))


def _model_dir(path: Path) -> str:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"weights")
    return str(path)


def test_local_models_are_looked_up_in_the_store_and_earlier_pieces_give_the_time(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    models = [{"name": "m", "base": _model_dir(tmp_path / "base"), "instruct": _model_dir(tmp_path / "inst")}]
    config = load_preset("toy", models=models, store=store.root, pathways=["fta"], techniques=["sft"])
    meta = ArtifactMeta("sweep-piece", {"flow": "test"})
    for label, kind, seconds, work in (("a", "data", 50.0, {"generation_requests": 100}),
                                       ("b", "eval", 30.0, {"generation_requests": 300}),
                                       ("c", "stage", 10.0, {})):  # no work recorded: not a rate
        store.put_json(layout.run_record("earlier", f"pieces/{label}.json"),
                       {"label": label, "kind": kind, "state": "completed", "started_at": 100.0,
                        "ended_at": 100.0 + seconds, "detail": "", "work": work}, meta)
    result = forecast(config)
    pieces = {p.label: p for p in result.pieces}
    assert result.rates == {"data": 0.5, "eval": 0.1}
    assert pieces["m-fta-s0"].in_store == pieces["eval-starts"].in_store == "no"  # fingerprinted, not there
    instructions = len(load_source("toy-train", config.data.limit).instructions)  # the preset's (all 345)
    assert pieces["m-fta-s0"].seconds == instructions * 8 * 0.5
    assert pieces["eval-starts"].seconds == round(pieces["eval-starts"].generation_requests * 0.1, 1)
    assert pieces["m-fta-s0-r16-sft"].seconds is None and result.critical_path_seconds is None
    assert pieces["m-fta-s0"].gpu_hours == 0  # a CPU preset

    store.put_json(layout.run_record("nightly", "items/m-fta-s0.json"), {"run_id": "x"}, meta)
    again = {p.label: p for p in forecast(config, "nightly").pieces}
    assert again["m-fta-s0"].in_store == "yes" and again["m-fta-s0"].seconds == 0  # finished by that run


def test_plan_json_from_the_command_line(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "codealign", "sweep", *args],  # noqa: E731
                                       capture_output=True, text=True, cwd=REPO)
    r = run("--preset", "toy", "--plan", "--json", "--store", str(tmp_path / "store"))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    held_out = len(load_benchmark("toy"))  # starting models and six stages, each in two modes
    instructions = len(load_source("toy-train", load_preset("toy").data.limit).instructions)
    assert plan["totals"]["generation_requests"] == {"known": 2 * instructions * 8 + 2 * 2 * held_out
                                                     + 6 * 2 * held_out,
                                                     "unknown_pieces": 2}
    assert plan["critical_path"]["pieces"][0] == "toy-pta-s0"
    r = run("--preset", "toy", "--json")
    assert r.returncode == 2 and "--json goes with --plan" in r.stderr
