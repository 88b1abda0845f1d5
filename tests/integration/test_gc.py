"""`codealign gc` on the local store and on S3 (moto on loopback): what a kept run needs stays —
its records, its units, their lineage down to the checkpoints and data — and it still resumes,
reports and verifies its lineage; old runs, unreachable units, unused checkpoints (never a
stage's last), finished stages' Ray Train state and old Prefect results go; a running run and
what a live lease holds never do; a killed run is stale, deleted only when asked."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.artifacts import gc, layout, runs
from codealign.tasks.artifacts.leases import LEASE_TTL_S, Lease
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef, verify
from codealign.tasks.artifacts.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def _put(store: ArtifactStore, key: str, obj, kind: str, *inputs: str) -> InputRef:
    refs = tuple(InputRef(store.uri(k), store.meta(k).sha256) for k in inputs)
    ref = store.put_json(key, obj, ArtifactMeta(kind, {"task": "test"}, refs))
    return InputRef(ref.uri, ref.sha256)


def _run(store: ArtifactStore, run_id: str, flow: str, done: list[str], state: str, days_ago: float,
         results_from: list[str] = ()) -> None:
    items = [runs.RunItem(k.split("/")[1], k, k) for k in done]
    runs.write_manifest(store, runs.Manifest(run_id, flow, {}, items), (), {})
    started = (NOW - dt.timedelta(days=days_ago)).isoformat()
    runs.write_status(store, runs.RunStatus(run_id, state, started_at=started), {})
    if state != "running":
        _put(store, layout.run_record(run_id, layout.RESULTS), {"run_id": run_id, "rows": []}, "run-results",
             *results_from)


def _checkpoint(store: ArtifactStore, tmp: Path, key: str, seed: int) -> None:
    folder = tmp / key.replace("/", "_")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([seed]) * 4096)
    store.put_directory(key, str(folder), f"{seed:064x}", ArtifactMeta("checkpoint", {"task": "test"}))


def _evaluation(store: ArtifactStore, unit: str, checkpoint: str) -> str:
    samples = f"units/{unit}/samples.jsonl"
    store.put_jsonl(samples, [{"task_id": "t/0", "completion": "x"}],
                    ArtifactMeta("samples", {}, (InputRef(store.uri(checkpoint), store.meta(checkpoint).sha256),)))
    _put(store, f"units/{unit}/verdicts.jsonl", {"passed": True}, "verdicts", samples)
    _put(store, f"units/{unit}/scores.json", {"overall": {"pass@1": 1.0}}, "scores", f"units/{unit}/verdicts.jsonl")
    return f"units/{unit}/scores.json"


def _world(store: ArtifactStore, tmp: Path) -> dict:
    """A stage with three checkpoints (1 evaluated by a kept run, 2 used by nothing, 3 its last)
    and its Ray Train state; an old run and the unit only it used; a killed run; a live run; a
    unit under a live lease; an orphan unit; Prefect results."""
    ckpt = {s: f"units/st/checkpoints/checkpoint-{s}" for s in (1, 2, 3)}
    for step, key in ckpt.items():
        _checkpoint(store, tmp, key, step)
    _put(store, "units/st/stage.json", {"stage": "sft"}, "training-stage", *ckpt.values())
    store.write_object("units/st/train-state/checkpoint_000001/optimizer.pt", b"o" * 8192)
    _run(store, "train-new", "train", ["units/st/stage.json"], "completed", 1, ["units/st/stage.json"])
    _run(store, "eval-new", "evaluate-checkpoints", [_evaluation(store, "u-new", ckpt[1])], "completed", 1,
         ["units/u-new/scores.json"])
    _checkpoint(store, tmp, "units/st-old/checkpoints/checkpoint-9", 9)
    old_scores = _evaluation(store, "u-old", "units/st-old/checkpoints/checkpoint-9")
    _run(store, "eval-old", "evaluate-checkpoints", [old_scores], "completed", 10, [old_scores])
    _run(store, "killed", "evaluate-checkpoints", ["units/u-killed/scores.json"], "running", 8)  # killed mid-unit
    store.put_jsonl("units/u-killed/samples.jsonl", [{"task_id": "t/0"}],
                    ArtifactMeta("samples", {}, (InputRef(store.uri(ckpt[3]), store.meta(ckpt[3]).sha256),)))
    _run(store, "live", "evaluate-checkpoints", ["units/u-live/scores.json"], "running", 9)
    store.put_jsonl("units/u-live/samples.jsonl", [{"task_id": "t/0"}], ArtifactMeta("samples", {}))
    run_lease = Lease(store, layout.run_record("live", gc.RUN_LEASE), LEASE_TTL_S)
    unit_lease = Lease(store, "units/u-busy/samples.jsonl", LEASE_TTL_S)
    assert run_lease.try_acquire() and unit_lease.try_acquire()
    store.put_jsonl("units/u-orphan/samples.jsonl", [{"task_id": "t/0"}], ArtifactMeta("samples", {}))
    store.write_object("prefect-results/0123abcd", b"r" * 100)
    store.write_object("units/u-new/more.jsonl.lease",
                       json.dumps({"holder": "x", "host": "elsewhere", "pid": 1, "expires": 0}).encode())
    return {"ckpt": ckpt, "leases": (run_lease, unit_lease)}


def test_gc_keeps_what_kept_runs_need_and_deletes_the_rest(store, tmp_path):
    world = _world(store, tmp_path)
    before = store.objects()
    try:
        plan = gc.plan(store, older_than_days=5, now=NOW)
        gc.plan(store, keep_last=0, now=NOW)  # planning twice is harmless: nothing deleted yet
        assert store.objects() == before

        assert plan.deleted_runs == ["eval-old"]
        assert plan.stale_runs == ["killed"]  # says running, holds no run lease: named, kept
        assert "killed" in plan.kept_runs and "live" in plan.kept_runs  # "live" holds its run lease
        gone = {(d.what, d.key) for d in plan.deletions}
        assert gone == {("run", "runs/eval-old"), ("unit", "units/u-old"), ("unit", "units/st-old"),
                        ("unit", "units/u-orphan"), ("checkpoint", world["ckpt"][2]),
                        ("train-state", "units/st/train-state"), ("lease", "units/u-new/more.jsonl.lease")}
        # Prefect results go only when older than the cutoff: these were just written
        assert all(d.bytes > 0 for d in plan.deletions if d.what != "lease")

        gc.apply(store, plan)
        assert not store.exists(layout.run_record("eval-old", layout.MANIFEST))
        assert [s.run_id for s in runs.list_runs(store) if s.run_id == "eval-old"] == []
        for key in ("units/u-old/scores.json", "units/u-orphan/samples.jsonl", world["ckpt"][2]):
            assert not store.exists(key), key
        assert not any(k.startswith("units/st/train-state/") for k in store.objects())
        # what the kept runs need is all there, and their lineage verifies
        for key in (world["ckpt"][1], world["ckpt"][3], "units/st/stage.json", "units/u-new/samples.jsonl",
                    "units/u-killed/samples.jsonl", "units/u-live/samples.jsonl"):
            assert store.exists(key), key
        assert store.read_object("units/u-busy/samples.jsonl.lease") is not None  # a live lease: untouched
        for run_id in ("train-new", "eval-new"):
            assert verify(store, store.uri(layout.run_record(run_id, layout.RESULTS))) == []
        # the thinned checkpoint: its tombstone keeps the sha256 the stage recorded
        assert json.loads(store.read_object(world["ckpt"][2] + layout.TOMBSTONE_SUFFIX))["sha256"] == f"{2:064x}"
        store.write_object(world["ckpt"][2] + layout.TOMBSTONE_SUFFIX, b"{}")
        [problem] = verify(store, store.uri(layout.run_record("train-new", layout.RESULTS)))
        assert "checkpoint-2: missing" in problem  # without a tombstone a missing input is a problem

        # the stale run goes only when asked; the live one never
        again = gc.plan(store, older_than_days=5, delete_stale=True, now=NOW)
        assert again.deleted_runs == ["killed"] and ("unit", "units/u-killed") in {(d.what, d.key)
                                                                                 for d in again.deletions}
        everything = gc.plan(store, keep_last=0, delete_stale=True, now=NOW)
        assert "live" not in everything.deleted_runs and "units/u-busy" not in {d.key for d in everything.deletions}
    finally:
        for lease in world["leases"]:
            lease.release()


def test_gc_refuses_a_store_with_a_damaged_run_and_an_unknown_keep_run(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    _run(store, "a", "train", [], "completed", 1)
    with pytest.raises(gc.GcError, match="--keep-run nope: no such run"):
        gc.plan(store, keep_last=0, keep=["nope"])
    with open(store.path(layout.run_record("a", layout.MANIFEST)), "ab") as f:
        f.write(b" ")
    with pytest.raises(gc.GcError, match="run a: IntegrityError"):
        gc.plan(store, keep_last=0)


def test_the_gc_command_dry_run_prints_sizes_and_deletes_nothing(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    world = _world(store, tmp_path)
    try:
        before = store.objects()
        command = [sys.executable, "-m", "codealign", "gc", "--store", store.root, "--older-than", "5"]
        dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, cwd=REPO)
        assert dry.returncode == 0, dry.stderr
        assert "would delete 1 run(s)" in dry.stdout and "units/st/train-state" in dry.stdout
        assert "stale: run killed says running but holds no run lease" in dry.stdout
        assert store.objects() == before
        done = subprocess.run([*command, "--keep-run", "eval-old", "--json"], capture_output=True, text=True,
                              cwd=REPO)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["deleted_runs"] == [] and result["bytes_by_kind"]["checkpoint"] > 4096
        assert store.exists(layout.run_record("eval-old", layout.MANIFEST)) and not store.exists(world["ckpt"][2])
    finally:
        for lease in world["leases"]:
            lease.release()


@pytest.mark.slow
def test_after_gc_on_s3_the_kept_evaluation_resumes_reports_and_verifies(tmp_path, toy_model_paths, prefect_api,
                                                                          ray_cluster, s3_server):
    """Two real evaluation runs on an S3 store (moto), of different checkpoints; gc keeps the
    newer: the older one's units go, the newer one resumes without recomputing anything, its
    results read back and its lineage verifies down to the units."""
    from toy_checkpoints import make_checkpoints

    from codealign.flows import registry
    from codealign.tasks.evaluation.units import CheckpointEvalConfig

    train = make_checkpoints(tmp_path / "train", toy_model_paths, [5, 10])
    root = f"s3://{s3_server['bucket']}/gc-{tmp_path.name}"

    def evaluate(checkpoint: str, run_id: str) -> None:
        config = CheckpointEvalConfig(checkpoints=[str(train / checkpoint)], store=root, benchmarks=["toy"],
                                      modes=["flow"], sampling={"n": 1, "temperature": 0.0, "max_tokens": 48},
                                      engine={"max_model_len": 512, "enforce_eager": True}, ks=[1], limit=3,
                                      workers=1)
        registry.run("evaluate-checkpoints", config, run_id)

    evaluate("checkpoint-5", "older")
    evaluate("checkpoint-10", "newer")
    store = ArtifactStore(root)
    older_units = {r["unit"] for r in runs.read_results(store, "older")}
    newer_units = {r["unit"] for r in runs.read_results(store, "newer")}
    plan = gc.plan(store, keep_last=1)
    assert plan.deleted_runs == ["older"] and {f"units/{u}" for u in older_units} <= {d.key for d in plan.deletions}
    gc.apply(store, plan)
    assert runs.list_runs(store)[0].run_id == "newer" and len(runs.list_runs(store)) == 1
    assert not any(k.startswith(tuple(f"units/{u}/" for u in older_units)) for k in store.objects())
    kept = {k: store.meta(k).sha256 for k in store.list("units")}
    assert {k.split("/")[1] for k in kept} == newer_units
    assert verify(store, store.uri(layout.run_record("newer", layout.RESULTS))) == []
    registry.resume(root, "newer")
    assert {k: store.meta(k).sha256 for k in store.list("units")} == kept  # nothing recomputed
    assert runs.summarize(store, "newer").state == "completed" and runs.read_results(store, "newer")
