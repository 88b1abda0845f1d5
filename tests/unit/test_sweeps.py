"""Sweep configs, presets and plans (no models needed), and the report's tables against a
sweep's stored results."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codealign.tasks.sweeps.config import (
    SweepConfig,
    SweepError,
    load_preset,
    preset_names,
)
from codealign.tasks.sweeps.plan import data_config, expand, stage_config


def test_presets_load_and_expand_to_their_grids():
    assert preset_names() == ["paper-001", "paper-002", "paper-003", "toy"]

    toy = expand(load_preset("toy"))
    assert [j.label for j in toy.data_jobs] == ["toy-pta-s0", "toy-fta-s0"]
    assert [(s.label, s.dataset, s.after) for s in toy.stages] == [
        ("toy-pta-s0-r16-sft", "sft", None),
        ("toy-pta-s0-r16-functional-dpo", "dpo", "toy-pta-s0-r16-sft"),
        ("toy-pta-s0-r16-functional-bonbon", "bon", "toy-pta-s0-r16-sft"),
        ("toy-fta-s0-r16-sft", "sft", None),
        ("toy-fta-s0-r16-functional-dpo", "dpo", "toy-fta-s0-r16-sft"),
        ("toy-fta-s0-r16-functional-bonbon", "bon", "toy-fta-s0-r16-sft")]
    assert [j.model for j in toy.data_jobs] == ["toy-base", "toy-instruct"]

    p1 = load_preset("paper-001")
    assert expand(p1).stages == [] and expand(p1).data_jobs == []
    assert set(p1.evaluation.modes) == {"flow", "command"} and len(p1.models) == 3

    p2 = load_preset("paper-002")
    plan2 = expand(p2)
    assert p2.evaluation.icl_shots == [0, 1, 3, 5] and p2.pathways == ["fta"]
    assert [(s.pair, s.technique, s.lora_r) for s in plan2.stages] == [
        (pair, "sft", r) for pair in ("qwen2.5-coder-3b", "deepseek-coder-1.3b") for r in (16, 32, 64)]
    assert len(plan2.data_jobs) == 2  # one per model: the ranks share their data

    p3 = load_preset("paper-003")
    plan3 = expand(p3)
    assert len(p3.models) == 5 and len(plan3.data_jobs) == 10
    sft = [s for s in plan3.stages if s.technique == "sft"]
    pref = [s for s in plan3.stages if s.technique != "sft"]
    assert len(sft) == 10 and len(pref) == 10 * 6 * 2  # pairs x pathways, x objectives x {dpo, bonbon}
    assert all(s.after == f"{s.pair}-{s.pathway}-s0-r16-sft" for s in pref)
    assert {s.dataset for s in pref if s.objective == "readability"} == {"nonfunctional-readability"}
    assert {s.dataset for s in pref if s.objective == "functional"} == {"dpo", "bon"}


def test_the_toy_preset_trains_sft_harder_than_dpo_and_bonbon():
    """The settings the toy effect was measured with (issue 25): SFT 6 epochs at LoRA lr 1e-3,
    DPO and BoNBoN 3 epochs at the LoRA default 2e-4 (they collapse at 1e-3), on every
    toy-train instruction."""
    config = load_preset("toy")
    plan = expand(config)
    assert config.data.limit is None
    by_technique = {s.technique: stage_config(config, s, "toy-base", "/data/x.parquet") for s in plan.stages[:3]}
    assert (by_technique["sft"].resolved_learning_rate, by_technique["sft"].num_train_epochs) == (1e-3, 6)
    for technique in ("dpo", "bonbon"):
        assert (by_technique[technique].resolved_learning_rate, by_technique[technique].num_train_epochs) == (2e-4, 3)


def test_branch_settings_reach_the_data_and_stage_configs():
    config = load_preset("toy", seeds=[3], stage_overrides={"dpo": {"beta": 0.3}})
    plan = expand(config)
    pta, fta = plan.data_jobs
    assert (data_config(config, pta).mode, data_config(config, fta).mode) == ("flow", "command")
    assert data_config(config, pta).sampling.seed == 3 and data_config(config, pta).kinds == ["bon", "dpo", "sft"]
    dpo = next(s for s in plan.stages if s.technique == "dpo")
    stage = stage_config(config, dpo, "/models/sft", "/data/dpo.parquet")
    assert (stage.stage, stage.pathway, stage.seed, stage.beta, stage.lora_r, stage.workers) == \
        ("dpo", "pta", 3, 0.3, 16, 2)
    sft = stage_config(config, plan.stages[0], "toy-base", "/data/sft.parquet")
    assert sft.beta == 0.1  # the override is DPO's only

    nonfunctional = load_preset("toy", objectives=["functional", "readability"])
    job_config = data_config(nonfunctional, expand(nonfunctional).data_jobs[0])
    assert "nonfunctional" in job_config.kinds and job_config.pairs.dimensions == ["readability"]


@pytest.mark.parametrize("overrides, message", [
    ({"stage_overrides": {"dpo": {"epoch": 3}}}, "stage_overrides.dpo.epoch: Extra inputs are not permitted"),
    ({"lora_ranks": [8]}, "LoRA rank 8 is not a preset"),
    ({"objectives": ["readability"], "techniques": ["sft"]}, "non-functional objectives need dpo or bonbon"),
    ({"models": [{"name": "a", "base": "x", "instruct": "y"}, {"name": "a", "base": "x", "instruct": "y"}]},
     "model pair names repeat"),
    ({"evaluation": {"icl_shots": [2]}}, "icl shots must be among"),
])
def test_bad_sweep_configs_name_the_field(overrides, message):
    with pytest.raises(SweepError, match="preset toy") as err:
        load_preset("toy", **overrides)
    assert message in str(err.value)
    with pytest.raises(SweepError, match="no preset 'nope'; presets: paper-001"):
        load_preset("nope")


def test_sweep_command_plans_and_rejects_a_bad_file_before_starting(tmp_path):
    bad = tmp_path / "sweep.yaml"
    bad.write_text("evaluation:\n  modes: [sideways]\n")
    result = subprocess.run([sys.executable, "-m", "codealign", "sweep", "--config", str(bad), "--store",
                             str(tmp_path / "store")], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{bad}: evaluation.modes.0: Input should be 'command' or 'flow'" in result.stderr
    assert not (tmp_path / "store").exists()
    planned = subprocess.run([sys.executable, "-m", "codealign", "sweep", "--preset", "paper-003", "--plan"],
                             capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr
    assert "10 data job(s), 130 stage(s)" in planned.stdout
    assert "llama3-8b-fta-s0-r16-readability-bonbon: bonbon on nonfunctional-readability, from " \
           "llama3-8b-fta-s0-r16-sft" in planned.stdout


# --- the report, from a sweep's stored record and results -------------------------------------------

def _sweep_in_store(tmp_path):
    """A finished toy-shaped sweep written by hand: record, evaluation results, manifest."""
    from codealign.tasks.artifacts import layout, runs
    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.sweeps.results import (
        Skipped,
        StartModel,
        SweepRecord,
        TrainedStage,
        result_rows,
    )

    store = ArtifactStore(str(tmp_path / "store"))
    meta = ArtifactMeta("test", {"flow": "test"})
    record = SweepRecord("sw", "toy", starts=[StartModel("toy", "pta", "/m/base", "b0"),
                                              StartModel("toy", "fta", "/m/inst", "i0")])
    ck = lambda step, sha: {"step": step, "uri": f"/ck/{sha}", "sha256": sha}  # noqa: E731
    deg = {"degraded": True, "start_score": 0.6, "sft_score": 0.5, "threshold": 0.02}
    record.stages = [
        TrainedStage("toy-pta-s0-r16-sft", "sft", "toy", "pta", "functional", 0, 16, "sw-a", "k1", None,
                     [ck(10, "ps1"), ck(20, "ps2")], {**deg, "degraded": False, "sft_score": 0.62}),
        TrainedStage("toy-pta-s0-r16-functional-dpo", "dpo", "toy", "pta", "functional", 0, 16, "sw-b", "k2",
                     "toy-pta-s0-r16-sft", [ck(8, "pd")]),
        TrainedStage("toy-pta-s0-r16-functional-bonbon", "bonbon", "toy", "pta", "functional", 0, 16, "sw-c", "k3",
                     "toy-pta-s0-r16-sft", [ck(8, "pb")]),
        TrainedStage("toy-fta-s0-r16-sft", "sft", "toy", "fta", "functional", 0, 16, "sw-d", "k4", None,
                     [ck(20, "fs")], deg)]
    record.skipped = [Skipped("toy-fta-s0-r16-functional-dpo", "SFT degraded (...)"),
                      Skipped("toy-fta-s0-r16-functional-bonbon", "SFT degraded (...)")]
    record.eval_runs = {0: ["sw-eval-starts", "sw-eval-toy-pta-s0-r16-sft"]}
    scores = {"b0": (0.5, 0.3), "ps1": (0.55, 0.35), "ps2": (0.6, 0.4), "pd": (0.65, 0.4), "pb": (0.7, 0.45),
              "i0": (0.6, 0.5), "fs": (0.5, 0.5)}  # sha -> (flow, command) pass@1
    failures = {("b0", "command"): {"format:no_code": 5, "wrong_answer": 2}, ("i0", "command"): {"wrong_answer": 3},
                ("b0", "flow"): {"wrong_answer": 4, "over_generation": 1}}
    eval_rows = [{"checkpoint_sha256": sha, "benchmark": "toy", "mode": mode, "pass@1": s[i],
                  "failures": failures.get((sha, mode), {})}
                 for sha, s in scores.items() for i, mode in enumerate(("flow", "command"))]
    rows = result_rows(record, {0: eval_rows})
    store.put_json(layout.run_record("sw", "sweep.json"), record.to_json(), meta)
    runs.write_results(store, "sw", rows, (), {"flow": "test"})
    runs.write_manifest(store, runs.Manifest("sw", "alignment-sweep", {}, []), (), {"flow": "test"})
    return store, rows


def test_report_tables_match_the_stored_results(tmp_path):
    from codealign.tasks.sweeps import report

    store, rows = _sweep_in_store(tmp_path)
    assert len(rows) == 14  # 7 checkpoints x 2 modes
    built = report.build(store, "sw")
    tables = {t.name: t for t in built.tables}
    flow = tables["alignment-toy-functional-s0-r16-flow"]
    assert flow.columns == ["stage", "toy PTA", "toy FTA"]
    assert flow.rows == [["Base", "0.500", "0.600"], ["SFT", "0.600", "0.500"], ["DPO", "0.650", "skipped"],
                         ["BoNBoN", "0.700", "skipped"], ["Δrel DPO", "+30.0%", "-"], ["Δrel BoNBoN", "+40.0%", "-"]]
    tax = tables["instruction-tuning-tax"]
    assert tax.rows[0] == ["toy base", "0.500", "0.300", "-0.200"]
    assert ["toy instruct", "0.600", "0.500", "-0.100"] in tax.rows
    early = tables["early-stop"].rows
    assert ["toy-fta-s0-r16-sft", "0.600", "0.500", "0.02", "degraded"] in early
    assert ["toy-fta-s0-r16-functional-dpo", "-", "-", "-", "skipped: SFT degraded (...)"] in early
    assert "icl-vs-lora" not in tables  # one shot count, one rank: nothing to compare
    classes = tables["failure-classes"]  # why samples failed, per final model and mode
    assert classes.columns == ["model", "mode", "failed", "wrong_answer", "format:no_code", "over_generation"]
    assert classes.rows == [["toy base", "Flow", "5", "4", "0", "1"], ["toy base", "Command", "7", "2", "5", "0"],
                            ["toy instruct", "Command", "3", "3", "0", "0"]]
    # every alignment cell is the stored result of that model's final checkpoint
    for r in rows:
        if r["final"] and r["mode"] == "flow":
            label = dict(report.TECHNIQUES)[r["technique"]]
            row = next(x for x in flow.rows if x[0] == label)
            assert row[1 + ["pta", "fta"].index(r["pathway"])] == f"{r['pass@1']:.3f}"
    assert built.png and built.png.startswith(b"\x89PNG")
    assert "| Base | 0.500 | 0.600 |" in built.markdown


def test_report_command_writes_the_report_into_the_store(tmp_path):
    store, _ = _sweep_in_store(tmp_path)
    result = subprocess.run([sys.executable, "-m", "codealign", "report", "sw", "--store", store.root],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Δrel BoNBoN" in result.stdout and "report: " in result.stdout
    assert (tmp_path / "store" / "runs" / "sw" / "report" / "report.md").read_text().startswith("# alignment-sweep sw")
    assert (tmp_path / "store" / "runs" / "sw" / "report" / "steps.png").stat().st_size > 1000
    missing = subprocess.run([sys.executable, "-m", "codealign", "report", "nope", "--store", store.root],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_a_sweep_config_is_a_prefect_form():
    """Prefect builds the UI form from the flow's parameter schema: it must be plain JSON schema."""
    from prefect.utilities.callables import parameter_schema

    from codealign.flows.alignment_sweep import alignment_sweep

    schema = parameter_schema(alignment_sweep.fn).model_dump()
    config = schema["definitions"]["SweepConfig"]
    assert {"models", "pathways", "techniques", "objectives", "early_stop"} <= set(config["properties"])
    assert SweepConfig.model_json_schema()["properties"]["pathways"]["items"]["enum"] == ["pta", "fta"]


def test_the_early_stop_gate_skips_what_follows_a_degraded_or_missing_stage():
    from codealign.tasks.sweeps.plan import skip_reason
    from codealign.tasks.sweeps.results import TrainedStage

    config = load_preset("toy")
    sft_plan, dpo_plan = expand(config).stages[:2]
    sft = TrainedStage(sft_plan.label, "sft", "toy", "pta", "functional", 0, 16, "r", "k", None,
                       [{"step": 4, "uri": "/c", "sha256": "s"}],
                       {"degraded": True, "start_score": 0.7, "sft_score": 0.6, "threshold": 0.02})
    assert skip_reason(dpo_plan, sft, True, early_stop=True) == \
        "SFT degraded (toy-pta-s0-r16-sft: held-out pass@1 0.700 -> 0.600, threshold 0.02)"
    assert skip_reason(dpo_plan, sft, True, early_stop=False) is None  # the gate is configurable
    sft.degradation = {**sft.degradation, "degraded": False, "sft_score": 0.69}
    assert skip_reason(dpo_plan, sft, True, early_stop=True) is None
    assert skip_reason(dpo_plan, None, True, early_stop=True) == "toy-pta-s0-r16-sft did not complete"
    assert skip_reason(sft_plan, None, False, early_stop=True) == "data toy-pta-s0 did not complete"
    assert skip_reason(sft_plan, None, True, early_stop=True) is None


def test_each_delta_in_the_report_carries_its_interval_over_tasks(tmp_path):
    """Δrel rows give the absolute Δ in points with its 95% paired bootstrap interval; a gain
    of a few tasks out of 60 is marked within noise, one of 60 out of 300 is not."""
    from codealign.tasks.sweeps import report

    store, rows = _sweep_in_store(tmp_path)
    units = {("b0", "flow"): "u-base", ("pd", "flow"): "u-dpo", ("pb", "flow"): "u-bonbon"}
    for r in rows:
        r["unit"] = units.get((r["checkpoint_sha256"], r["mode"]))
    base = {f"t{i}": float(i % 2) for i in range(60)}
    per_task = {"u-base": base, "u-dpo": {**base, "t0": 1.0, "t2": 1.0, "t4": 1.0},  # +3 of 60
                "u-bonbon": {t: 1.0 if int(t[1:]) < 54 else v for t, v in base.items()}}  # +27 of 60
    tables = report.alignment_tables(rows, report.read_record(store, "sw"), per_task.get)
    flow = next(t for t in tables if t.name == "alignment-toy-functional-s0-r16-flow")
    cells = {row[0]: row[1] for row in flow.rows}
    assert cells["Δrel DPO"].startswith("+30.0% (+5.0 [") and cells["Δrel DPO"].endswith("60 tasks, within noise)")
    assert cells["Δrel BoNBoN"].startswith("+40.0% (+45.0 [") and cells["Δrel BoNBoN"].endswith("60 tasks)")
    assert flow.rows[-1][2] == "-"  # FTA: skipped, no interval to give


def test_the_previous_run_is_the_newest_completed_sweep_of_the_same_deployment_or_preset_started_before(tmp_path):
    from codealign.tasks.artifacts import layout, runs
    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.sweeps import report
    from codealign.tasks.sweeps.results import SweepRecord

    store = ArtifactStore(str(tmp_path / "store"))
    meta = ArtifactMeta("test", {"task": "test"})
    nightly = "run-alignment-sweep/nightly"
    for run_id, preset, state, day, deployment in (
            ("n1", "toy", "completed", "11-30", nightly), ("a", "toy", "completed", "12-01", None),
            ("b", "toy", "failed", "12-02", None), ("c", "paper-001", "completed", "12-03", None),
            ("d", "toy", "completed", "12-04", None), ("e", "toy", "running", "12-05", None),
            ("od", "toy", "completed", "12-06", "run-alignment-sweep/on-demand"),
            ("n2", "toy", "running", "12-07", nightly)):
        made_by = {"deployment": deployment} if deployment else {}
        runs.write_manifest(store, runs.Manifest(run_id, "alignment-sweep", {}, []), (), made_by)
        runs.write_status(store, runs.RunStatus(run_id, state, started_at=f"2026-{day}T02:00:00+00:00"), {})
        store.put_json(layout.run_record(run_id, "sweep.json"), SweepRecord(run_id, preset).to_json(), meta)
    assert report.previous_run(store, "e", "toy") == "d"  # not c (another preset), not e itself
    assert report.previous_run(store, "d", "toy") == "a"  # not b: it failed
    assert report.previous_run(store, "a", "toy") == "n1"  # a run from the CLI: any earlier one of its preset
    # a nightly against the night before: not the on-demand sweep nor the CLI ones in between
    assert report.previous_run(store, "n2", "toy") == "n1"
    assert runs.started_by(store, "n2") == nightly and runs.read_manifest(store, "n2").deployment == nightly
    assert runs.started_by(store, "a") is None
    assert report.previous_run(store, "n1", "toy") is None


def _night(store, run_id: str, day: int, passes: int, tasks: int = 100) -> None:
    """A finished toy sweep whose only cell is the FTA starting model, passing ``passes`` tasks."""
    from codealign.tasks.artifacts import layout, runs
    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.sweeps.results import StartModel, SweepRecord

    meta = ArtifactMeta("test", {"task": "test"})
    runs.write_manifest(store, runs.Manifest(run_id, "alignment-sweep", {}, []), (), {})
    runs.write_status(store, runs.RunStatus(run_id, "completed", started_at=f"2026-12-0{day}T02:00:00+00:00"), {})
    record = SweepRecord(run_id, "toy", starts=[StartModel("toy", "fta", "file:///toy-instruct", "sha-instruct")],
                         eval_runs={0: [f"{run_id}-eval"]})
    store.put_json(layout.run_record(run_id, "sweep.json"), record.to_json(), meta)
    unit = f"u-{run_id}"
    store.put_jsonl(layout.unit_artifact(unit, "verdicts.jsonl"),
                    [{"task_id": f"toy/{i}", "passed": i < passes} for i in range(tasks)], meta)
    runs.write_manifest(store, runs.Manifest(f"{run_id}-eval", "evaluate-checkpoints", {}, []), (), {})
    runs.write_results(store, f"{run_id}-eval", [{"checkpoint_sha256": "sha-instruct", "benchmark": "toy",
                                                  "mode": "command", "unit": unit, "pass@1": passes / tasks}], (), {})


def test_a_significant_drop_against_the_previous_night_fails_the_sweep_and_names_the_cell(tmp_path):
    from codealign.flows.alignment_sweep import check_regressions
    from codealign.flows.runtime import RunFailed
    from codealign.tasks.artifacts import runs
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.sweeps import report

    store = ArtifactStore(str(tmp_path / "store"))
    _night(store, "n1", 1, passes=80)
    _night(store, "n2", 2, passes=40)
    config = load_preset("toy", regression={"threshold_points": 5})
    check_regressions(store, runs.read_status(store, "n2"), load_preset("toy"), {})  # no setting: never fails
    check_regressions(store, runs.read_status(store, "n2"),
                      load_preset("toy", regression={"techniques": ["dpo"]}), {})  # not a cell it watches
    check_regressions(store, runs.read_status(store, "n2"),
                      load_preset("toy", regression={"threshold_points": 50}), {})  # a drop of 40 < 50 points
    with pytest.raises(RunFailed, match=r"regression against n1: toy fta base .*toy command: pass@1 0.800 -> 0.400"
                                        r" \(-40.0 \[.*\] pts\)"):
        check_regressions(store, runs.read_status(store, "n2"), config, {})
    assert runs.read_status(store, "n2").state == "failed"  # the run's state; its results stay
    assert runs.read_results(store, "n2-eval")
    assert "**Failed: regression against n1" in report.build(store, "n2").markdown
    _night(store, "n3", 3, passes=41)  # against n1 (the last completed): -39 points, fails too
    with pytest.raises(RunFailed):
        check_regressions(store, runs.read_status(store, "n3"), config, {})
    _night(store, "n4", 4, passes=83)
    check_regressions(store, runs.read_status(store, "n4"), config, {})  # better than n1: fine
