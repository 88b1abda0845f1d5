"""The alignment-sweep flow for real: Prefect server, the session's Ray cluster, the toy
models.  A small toy sweep of two seeds (FTA: data → SFT → DPO → evaluation of every
checkpoint) runs its branches concurrently; it is SIGKILLed through the CLI after its first
piece and resumed, and writes its record (with each piece's times), results and report; the
same sweep again, one piece at a time (as a nightly run would, through the CLI), recomputes
nothing and gives the same results; a changed DPO setting retrains only the DPO stage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from killed_runs import kill_then_resume

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.sweeps.config import SweepConfig, load_preset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SEEDS = ["s0", "s1"]
PIECES = 11  # per seed: data, sft, dpo and their evaluations; and the starting model's evaluation


def settings(source: Path, store: Path, address: str) -> dict:
    """The toy preset made small: FTA only, two seeds, SFT then DPO, 12 instructions x 4
    responses; one Ray Train worker per stage, so the two nodes' 3 CPUs hold two stages."""
    return {
        "pathways": ["fta"], "techniques": ["sft", "dpo"], "seeds": [0, 1], "max_parallel": 2,
        "store": str(store), "ray_address": address,
        "data": {"source": str(source), "limit": 12, "shard_size": 8,
                 "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 160},
                 "engine": {"max_model_len": 512, "enforce_eager": True}},
        "training": {"workers": 1, "per_device_train_batch_size": 4, "num_train_epochs": 1, "warmup_steps": 0,
                     "save_steps": 2, "max_length": 384, "degradation_limit": 12, "eval_max_tokens": 160},
        # two SFT checkpoints: each is evaluated; the preset's own SFT epochs and rate replaced
        # (the CLI's --config merges into the preset, load_preset(**given) replaces: both the same)
        "stage_overrides": {"sft": {"save_steps": 1, "num_train_epochs": 1, "learning_rate": 2e-4}},
        "evaluation": {"benchmarks": ["toy"], "modes": ["command"], "checkpoints": "all", "limit": 12, "ks": [1],
                       "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 160}},
    }


def units(store: ArtifactStore) -> set[str]:
    return {k.split("/")[1] for k in store.list(layout.UNITS)}


def sweep_command(config_file: Path, given: dict, run_id: str) -> list[str]:
    return [sys.executable, "-m", "codealign", "sweep", "--config", str(config_file), "--store", given["store"],
            "--ray-address", given["ray_address"], "--run-id", run_id]


@pytest.fixture(scope="module")
def sweep(pathway_runs, prefect_api, ray_cluster, tmp_path_factory):
    """The sweep started through the CLI, SIGKILLed once its first piece is done, resumed; on
    two loopback nodes (the session's head, 2 CPUs, and a second node, 1 CPU) for the module."""
    stop_node = ray_cluster["add_node"]()
    root = tmp_path_factory.mktemp("sweep")
    given = settings(pathway_runs[1], root / "store", ray_cluster["address"])
    config_file = root / "sweep.yaml"
    config_file.write_text(yaml.safe_dump({k: v for k, v in given.items() if k not in ("store", "ray_address")}))
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    items = root / "store" / "runs" / "sw1" / "items"
    store = kill_then_resume(sweep_command(config_file, given, "sw1"), env, REPO,
                             lambda: items.is_dir() and any(items.glob("*.json.meta.json")), "finished piece",
                             root / "store", ray_cluster["address"], items=PIECES)
    yield root, given, store, config_file
    stop_node()


def test_a_toy_sweep_trains_evaluates_and_reports(sweep):
    from codealign.tasks.sweeps import report
    from codealign.tasks.sweeps.results import read_record

    _, _, store, _ = sweep
    record = read_record(store, "sw1")
    assert record.data_runs == {f"toy-fta-{s}": f"sw1-toy-fta-{s}-data" for s in SEEDS}
    labels = [f"toy-fta-{s}-r16-{t}" for s in SEEDS for t in ("sft", "functional-dpo")]
    assert [s.label for s in record.stages] == labels
    sft, dpo = record.stages[:2]
    assert dpo.after == sft.label and sft.degradation is not None and record.skipped == []
    # the DPO stage started from the SFT model's last checkpoint, trained on the data run's dpo pairs
    stage = store.get_json(layout.unit_artifact(dpo.stage_key, "stage.json"))
    assert stage["model"]["sha256"] == sft.checkpoints[-1]["sha256"]
    assert stage["dataset"]["uri"] == store.uri(layout.run_dataset("sw1-toy-fta-s0-data", "dpo.parquet"))
    assert record.stages[0].stage_key != record.stages[2].stage_key  # the seeds' branches differ

    rows = runs.read_results(store, "sw1")
    evaluated = {(r["technique"], r["seed"], r["step"]) for r in rows}
    expected = {("base", None, 0)} | {(s.technique, s.seed, c["step"]) for s in record.stages for c in s.checkpoints}
    assert evaluated == expected and len(sft.checkpoints) >= 2  # every checkpoint, not only the last
    assert record.eval_runs == {0: ["sw1-eval-starts", *(f"sw1-eval-{s.label}" for s in record.stages)]}  # plan order
    eval_rows = [r for sub in record.all_eval_runs() for r in runs.read_results(store, sub)]
    by_sha = {r["checkpoint_sha256"]: r["pass@1"] for r in eval_rows}
    assert all(r["pass@1"] == by_sha[r["checkpoint_sha256"]] for r in rows)

    built = report.build(store, "sw1")
    # each stage's curves are linked: its TensorBoard logdir in the store (the default tracker)
    for stage in record.stages:
        logdir = store.uri(layout.unit_artifact(stage.stage_key, "tracking/tensorboard"))
        assert f"- **tracking** {stage.label}: TensorBoard `tensorboard --logdir {logdir}`" in built.markdown
    table = next(t for t in built.tables if t.name == "alignment-toy-functional-s0-r16-command")
    cells = {row[0]: row[1] for row in table.rows}
    final = {r["technique"]: r["pass@1"] for r in rows if r["final"] and r["seed"] in (0, None)}
    assert cells["Base"] == f"{final['base']:.3f}" and cells["SFT"] == f"{final['sft']:.3f}"
    assert cells["DPO"] == f"{final['dpo']:.3f}" and cells["BoNBoN"] == "-"
    rel = (final["dpo"] - final["base"]) / final["base"]
    # each Δrel carries the absolute Δ and its 95% paired interval over the benchmark's 12 tasks
    number = r"([+-][\d.]+)"
    delta = re.fullmatch(rf"{number}% \({number} \[{number}, {number}\] pts, 12 tasks(, within noise)?\)",
                         cells["Δrel DPO"])
    assert delta and delta[1] == f"{100 * rel:+.1f}", cells["Δrel DPO"]
    points, low, high = (float(delta[i]) for i in (2, 3, 4))
    assert points == pytest.approx(100 * (final["dpo"] - final["base"]), abs=0.06) and low <= points <= high
    assert (delta[5] is None) == (low > 0 or high < 0)  # "within noise" exactly when the interval holds 0
    assert (Path(store.path(store.uri("runs/sw1/report/report.md")))).read_text() == built.markdown
    assert store.exists("runs/sw1/report/steps.png")


def test_the_branches_ran_concurrently_and_each_piece_records_its_times(sweep):
    """The resumed run's pieces: each with its start and end, in the record and in the store;
    together they took longer than the run did, which only overlapping pieces can."""
    from codealign.tasks.sweeps.results import read_record

    _, _, store, _ = sweep
    pieces = read_record(store, "sw1").pieces
    assert len(pieces) == PIECES and {p["state"] for p in pieces} == {"completed"}
    assert all(p["ended_at"] >= p["started_at"] for p in pieces)
    for p in pieces:
        assert store.get_json(layout.run_record("sw1", f"pieces/{p['label']}.json")) == p
    span = max(p["ended_at"] for p in pieces) - min(p["started_at"] for p in pieces)
    assert sum(p["ended_at"] - p["started_at"] for p in pieces) > span
    # the critical path: a chain of pieces, each needing the one before, no longer than all of them
    from codealign.tasks.sweeps import schedule
    from codealign.tasks.sweeps.plan import expand

    _, given, _, _ = sweep
    needs = {p.label: p.needs for p in schedule.pieces(expand(load_preset("toy", **given)))}
    path = read_record(store, "sw1").critical_path
    assert all(a in needs[b] for a, b in zip(path["pieces"], path["pieces"][1:]))
    assert 0 < path["seconds"] <= path["sum_seconds"]
    assert f"critical path {path['seconds']:.0f} s" in store.get("runs/sw1/report/report.md").decode()


def test_the_report_is_a_prefect_artifact(sweep):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["alignment-sweep-report"])))

    artifacts = asyncio.run(read())
    assert artifacts and "alignment-sweep sw1" in artifacts[-1].data
    assert "runs/sw1/report/report.md" in artifacts[-1].data


def test_the_same_sweep_again_one_piece_at_a_time_recomputes_nothing_and_agrees(sweep, prefect_api):
    """A nightly run with no new input, serial this time: every piece is found in the store
    (run via the CLI), and its results are the concurrent run's."""
    root, given, store, config_file = sweep
    before = units(store)
    serial = root / "serial.yaml"
    serial.write_text(yaml.safe_dump({**yaml.safe_load(config_file.read_text()), "max_parallel": 1}))
    result = subprocess.run(sweep_command(serial, given, "sw2"), capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PREFECT_API_URL": prefect_api})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Δrel DPO" in result.stdout and "report: " in result.stdout
    assert units(store) == before  # no shard sampled, no stage trained, no unit evaluated again
    assert runs.read_results(store, "sw2") == runs.read_results(store, "sw1")
    # its report compares it with the previous completed sweep of the preset: every cell reused
    from codealign.tasks.sweeps import report

    [previous] = [t for t in report.build(store, "sw2").tables if t.name == "against-previous"]
    assert "previous completed run sw1" in previous.title and previous.rows
    assert all(row[-2].startswith("reused") for row in previous.rows)


def test_a_changed_dpo_setting_retrains_only_dpo(sweep):
    from codealign.flows import registry
    from codealign.tasks.sweeps.results import read_record

    _, given, store, _ = sweep
    before = units(store)
    # watching BoNBoN cells only (this grid has none): the regression check runs and passes
    config = SweepConfig.model_validate({**load_preset("toy", **given).model_dump(), "seeds": [0],
                                         "stage_overrides": {**given["stage_overrides"], "dpo": {"beta": 0.3}},
                                         "regression": {"techniques": ["bonbon"]}})
    registry.run("alignment-sweep", config, "sw3")
    old, new = read_record(store, "sw1"), read_record(store, "sw3")
    assert new.stages[0].stage_key == old.stages[0].stage_key  # SFT reused
    assert new.stages[1].stage_key != old.stages[1].stage_key  # DPO retrained
    added = units(store) - before
    assert new.stages[1].stage_key in added and old.stages[0].stage_key not in added
    # the rest: evaluation units of the new DPO checkpoints
    assert all(store.exists(layout.unit_artifact(k, "scores.json")) for k in added - {new.stages[1].stage_key})

    # `codealign compare` between the two: what was reused is marked so; the retrained DPO cell
    # carries its difference with an interval over the benchmark's tasks
    from codealign.tasks.sweeps.compare import compare_runs

    cells = {(c.cell["technique"], c.cell["seed"]): c for c in compare_runs(store, "sw1", "sw3")}
    assert cells[("base", None)].reused and cells[("sft", 0)].reused
    dpo = cells[("dpo", 0)]
    assert not dpo.reused and dpo.delta is not None and dpo.delta.tasks == 12
    assert dpo.delta.low <= dpo.delta.estimate <= dpo.delta.high
    assert dpo.b - dpo.a == pytest.approx(dpo.delta.estimate)
    assert cells[("dpo", 1)].note == "only in sw1"  # sw3 ran seed 0 only


def test_gc_keeping_the_newest_sweep_keeps_all_it_needs_and_it_resumes_reports_and_verifies(sweep):
    """After the tests above: gc --keep-last 1 keeps sw3 (with its sub-runs and the data run
    whose dataset its reused SFT stage was trained on); sw1's DPO stage, which only sw1 and sw2
    used, goes, as does every finished stage's Ray Train state; sw3 resumes recomputing nothing,
    reports, and its lineage verifies."""
    from codealign.flows import registry
    from codealign.tasks.artifacts import gc
    from codealign.tasks.artifacts.lineage import verify
    from codealign.tasks.sweeps import report
    from codealign.tasks.sweeps.results import read_record

    _, given, store, _ = sweep
    old, new = read_record(store, "sw1"), read_record(store, "sw3")
    plan = gc.plan(store, keep_last=1)
    assert "sw3" in plan.kept_runs and {"sw1", "sw2"} <= set(plan.deleted_runs)
    assert {d.what for d in plan.deletions} >= {"run", "unit", "train-state"}
    gc.apply(store, plan)
    assert not store.exists(layout.unit_artifact(old.stages[1].stage_key, "stage.json"))  # only sw1/sw2 used it
    assert all(store.exists(layout.unit_artifact(s.stage_key, "stage.json")) for s in new.stages)
    assert not any("/train-state/" in k for k in store.objects())
    assert verify(store, store.uri(layout.run_record("sw3", layout.RESULTS))) == []
    left = {k: store.meta(k).sha256 for k in store.list(layout.UNITS)}
    registry.resume(given["store"], "sw3")
    assert {k: store.meta(k).sha256 for k in store.list(layout.UNITS)} == left  # nothing recomputed
    assert report.build(store, "sw3").tables
