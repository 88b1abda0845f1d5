"""The alignment-sweep flow for real: Prefect server, the session's Ray cluster, the toy
models.  A small toy sweep (FTA: data → SFT → DPO → evaluation of every checkpoint) writes its
record, results and report; the same sweep again (through the CLI, as a nightly run would)
recomputes nothing; a changed DPO setting retrains only the DPO stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.sweeps.config import SweepConfig, load_preset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def settings(source: Path, store: Path, address: str) -> dict:
    """The toy preset made small: FTA only, SFT then DPO, 12 instructions x 4 responses."""
    return {
        "pathways": ["fta"], "techniques": ["sft", "dpo"], "store": str(store), "ray_address": address,
        "data": {"source": str(source), "limit": 12, "shard_size": 8,
                 "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 160},
                 "engine": {"max_model_len": 512, "enforce_eager": True}},
        "training": {"workers": 2, "batch_size": 2, "epochs": 1, "warmup_steps": 0, "save_steps": 2,
                     "max_length": 384, "degradation_limit": 12, "eval_max_tokens": 160},
        "stage_overrides": {"sft": {"save_steps": 1}},  # two SFT checkpoints: each is evaluated
        "evaluation": {"benchmarks": ["toy"], "modes": ["command"], "checkpoints": "all", "limit": 12, "ks": [1],
                       "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 160}},
    }


def units(store: ArtifactStore) -> set[str]:
    return {k.split("/")[1] for k in store.list(layout.UNITS)}


@pytest.fixture(scope="module")
def sweep(pathway_runs, prefect_api, ray_cluster, tmp_path_factory):
    from codealign.flows import registry

    root = tmp_path_factory.mktemp("sweep")
    given = settings(pathway_runs[1], root / "store", ray_cluster["address"])
    config = load_preset("toy", **given)
    result = registry.run("alignment-sweep", config, "sw1")
    store = ArtifactStore(config.store)
    return root, given, store, result


def test_a_toy_sweep_trains_evaluates_and_reports(sweep):
    from codealign.tasks.sweeps import report
    from codealign.tasks.sweeps.results import read_record

    _, _, store, result = sweep
    assert result["complete"] == result["units"] == 4  # data job, sft, dpo, evaluation
    record = read_record(store, "sw1")
    assert record.data_runs == {"toy-fta-s0": "sw1-toy-fta-s0-data"}
    assert [s.label for s in record.stages] == ["toy-fta-s0-r16-sft", "toy-fta-s0-r16-functional-dpo"]
    sft, dpo = record.stages
    assert dpo.after == sft.label and sft.degradation is not None and record.skipped == []
    # the DPO stage started from the SFT model's last checkpoint, trained on the data run's dpo pairs
    stage = store.get_json(layout.unit_artifact(dpo.stage_key, "stage.json"))
    assert stage["model"]["sha256"] == sft.checkpoints[-1]["sha256"]
    assert stage["dataset"]["uri"] == store.uri(layout.run_dataset("sw1-toy-fta-s0-data", "dpo.parquet"))

    rows = runs.read_results(store, "sw1")
    evaluated = {(r["technique"], r["step"]) for r in rows}
    expected = {("base", 0)} | {(s.technique, c["step"]) for s in record.stages for c in s.checkpoints}
    assert evaluated == expected and len(sft.checkpoints) >= 2  # every checkpoint, not only the last
    eval_rows = runs.read_results(store, "sw1-eval")
    by_sha = {r["checkpoint_sha256"]: r["pass@1"] for r in eval_rows}
    assert all(r["pass@1"] == by_sha[r["checkpoint_sha256"]] for r in rows)

    built = report.build(store, "sw1")
    table = next(t for t in built.tables if t.name == "alignment-toy-functional-s0-r16-command")
    cells = {row[0]: row[1] for row in table.rows}
    final = {r["technique"]: r["pass@1"] for r in rows if r["final"]}
    assert cells["Base"] == f"{final['base']:.3f}" and cells["SFT"] == f"{final['sft']:.3f}"
    assert cells["DPO"] == f"{final['dpo']:.3f}" and cells["BoNBoN"] == "-"
    rel = (final["dpo"] - final["base"]) / final["base"]
    assert cells["Δrel DPO"] == f"{100 * rel:+.1f}%"
    assert (Path(store.path(store.uri("runs/sw1/report/report.md")))).read_text() == built.markdown
    assert store.exists("runs/sw1/report/steps.png")


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


def test_the_same_sweep_again_recomputes_nothing(sweep, prefect_api, ray_cluster):
    """A nightly run with no new input: every piece is found in the store (run via the CLI)."""
    root, given, store, _ = sweep
    before = units(store)
    config_file = root / "nightly.yaml"
    config_file.write_text(yaml.safe_dump({k: v for k, v in given.items() if k not in ("store", "ray_address")}))
    result = subprocess.run([sys.executable, "-m", "codealign", "sweep", "--config", str(config_file), "--store",
                             given["store"], "--ray-address", ray_cluster["address"], "--run-id", "sw2"],
                            capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PREFECT_API_URL": prefect_api})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Δrel DPO" in result.stdout and "report: " in result.stdout
    assert units(store) == before  # no shard sampled, no stage trained, no unit evaluated again
    first, second = runs.read_results(store, "sw1"), runs.read_results(store, "sw2")
    assert second == first


def test_a_changed_dpo_setting_retrains_only_dpo(sweep):
    from codealign.flows import registry
    from codealign.tasks.sweeps.results import read_record

    _, given, store, _ = sweep
    before = units(store)
    config = SweepConfig.model_validate({**load_preset("toy", **given).model_dump(),
                                         "stage_overrides": {**given["stage_overrides"], "dpo": {"beta": 0.3}}})
    registry.run("alignment-sweep", config, "sw3")
    old, new = read_record(store, "sw1"), read_record(store, "sw3")
    assert new.stages[0].stage_key == old.stages[0].stage_key  # SFT reused
    assert new.stages[1].stage_key != old.stages[1].stage_key  # DPO retrained
    added = units(store) - before
    assert new.stages[1].stage_key in added and old.stages[0].stage_key not in added
    # the rest: evaluation units of the new DPO checkpoints
    assert all(store.exists(layout.unit_artifact(k, "scores.json")) for k in added - {new.stages[1].stage_key})
