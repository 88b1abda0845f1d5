"""Checkpoint discovery, fingerprints and checks; unit keys; run summaries; CLI input errors;
the Ray connection's retries.  Fast: no engine, no Prefect server, no Ray instance (ray.init is
stubbed; the flow itself is in test_evaluate_checkpoints.py)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.artifacts.checkpoints import (
    CheckpointError,
    discover,
    fingerprint,
    validate,
)
from codealign.tasks.evaluation.units import (
    CheckpointEvalConfig,
    kept_units,
    make_units,
    recorded_units,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[2]


def _safetensors(payload: bytes = b"\0" * 16) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(payload)]}}).encode()
    return struct.pack("<Q", len(header)) + header + payload


def make_checkpoint(path: Path, weights: bytes | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights if weights is not None else _safetensors())
    return path


def test_discover_orders_checkpoints_by_step_not_name(tmp_path):
    for step in (1000, 50, 200):
        make_checkpoint(tmp_path / "out" / f"checkpoint-{step}")
    (tmp_path / "out" / "runs").mkdir()  # unrelated directories are ignored
    found = discover([str(tmp_path / "out")])
    assert [u.rsplit("-", 1)[1] for u in found] == ["50", "200", "1000"]
    assert discover([str(tmp_path / "out" / "checkpoint-200")]) == [found[1]]


def test_discover_rejects_missing_and_empty_sources(tmp_path):
    with pytest.raises(CheckpointError, match="nope: no such checkpoint"):
        discover([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        discover([str(tmp_path / "empty")])


def test_fingerprint_follows_content_not_path_and_ignores_optimizer_state(tmp_path):
    a = fingerprint(str(make_checkpoint(tmp_path / "a" / "checkpoint-5")))
    b = make_checkpoint(tmp_path / "b" / "checkpoint-5")
    (b / "optimizer.pt").write_bytes(b"optimizer state")
    assert fingerprint(str(b)).sha256 == a.sha256 and a.step == 5
    (b / "model.safetensors").write_bytes(_safetensors(b"\1" * 16))
    assert fingerprint(str(b)).sha256 != a.sha256


@pytest.mark.parametrize("weights, message", [
    (_safetensors()[:-5], "size .* does not match its header"),
    (b"\xff" * 64, "corrupt header"),
    (b"abc", "truncated"),
    (b"\x02\0\0\0\0\0\0\0[]", "corrupt header \\(not a safetensors tensor table\\)"),
])
def test_validate_names_the_corrupt_file(tmp_path, weights, message):
    ckpt = make_checkpoint(tmp_path / "checkpoint-1", weights)
    with pytest.raises(CheckpointError, match=rf"checkpoint-1/model\.safetensors: {message}"):
        validate(str(ckpt))


def test_validate_rejects_bad_config(tmp_path):
    ckpt = make_checkpoint(tmp_path / "checkpoint-1")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint-1/config\.json: not valid JSON"):
        validate(str(ckpt))
    validate(str(make_checkpoint(tmp_path / "checkpoint-2")))  # a good one passes


def test_unit_keys_change_with_results_settings_only(tmp_path):
    ckpt = fingerprint(str(make_checkpoint(tmp_path / "checkpoint-1")))
    base = CheckpointEvalConfig(checkpoints=["x"], benchmarks=["toy", "mbpp"], modes=["command", "flow"])
    keys = [u.key for u in make_units(base, [ckpt])]
    assert len(set(keys)) == 4
    moved = base.model_copy(update={"store": "s3://elsewhere", "workers": 7, "ray_address": "auto"})
    assert [u.key for u in make_units(moved, [ckpt])] == keys  # where it runs does not matter
    hotter = base.model_copy(update={"sampling": base.sampling.model_copy(update={"temperature": 0.8})})
    assert not set(u.key for u in make_units(hotter, [ckpt])) & set(keys)


def test_config_paths_are_absolute_so_remote_workers_find_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = CheckpointEvalConfig(checkpoints=["train"], store="runs")
    assert cfg.store == f"file://{tmp_path}/runs" and cfg.checkpoints == [f"{tmp_path}/train"]
    assert CheckpointEvalConfig(checkpoints=["s3://b/t"], store="s3://b/p").store == "s3://b/p"
    with pytest.raises(ValueError):
        CheckpointEvalConfig(checkpoints=[])


def test_same_content_under_two_paths_is_one_unit(tmp_path):
    a = fingerprint(str(make_checkpoint(tmp_path / "checkpoint-1")))
    b = fingerprint(str(make_checkpoint(tmp_path / "final" / "checkpoint-1")))
    cfg = CheckpointEvalConfig(checkpoints=["x"], benchmarks=["toy"], modes=["flow"])
    (unit,) = make_units(cfg, [a, b])
    assert unit.checkpoint.uri == a.uri


def test_resume_keeps_units_of_checkpoints_that_vanished(tmp_path):
    """A trainer's save_total_limit deletes old checkpoint dirs: their results stay in the run."""
    from codealign.tasks.artifacts.store import ArtifactStore

    ckpts = []
    for step in (1, 2):
        path = make_checkpoint(tmp_path / f"checkpoint-{step}")
        (path / "step.txt").write_text(str(step))
        ckpts.append(fingerprint(str(path)))
    store = ArtifactStore(str(tmp_path / "store"))
    cfg = CheckpointEvalConfig(checkpoints=[str(tmp_path)], store=store.root, benchmarks=["toy"], modes=["flow"])
    old = make_units(cfg, ckpts)
    write_manifest(store, "r", cfg, old, {"flow": "evaluate-checkpoints"})
    assert recorded_units(store, "r") == old and recorded_units(store, "new") == []
    now = make_units(cfg, ckpts[1:])  # checkpoint-1 is gone
    assert kept_units(recorded_units(store, "r"), now) == [old[0]]
    (tmp_path / "checkpoint-1" / "step.txt").write_text("rewritten")  # same path, new content
    changed = fingerprint(str(tmp_path / "checkpoint-1"))
    assert kept_units(recorded_units(store, "r"), make_units(cfg, [changed, ckpts[1]])) == []  # replaced, not kept


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codealign", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def test_cli_rejects_bad_checkpoint_input_before_starting_anything(tmp_path):
    r = _cli("evaluate-checkpoints", "--checkpoints", str(tmp_path / "missing"), "--store", str(tmp_path / "s"),
             "--benchmarks", "toy")
    assert r.returncode == 2 and "missing: no such checkpoint or directory" in r.stderr
    r = _cli("evaluate-checkpoints", "--checkpoints", str(tmp_path), "--benchmarks", "nope")
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr
    r = _cli("evaluate-checkpoints", "--checkpoints", str(tmp_path), "--modes", "sideways")
    assert r.returncode == 2 and "modes" in r.stderr
    r = _cli("resume", "no-such-run", "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "no run 'no-such-run'" in r.stderr
    r = _cli("lineage", "no-such-run", "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "no such run or artifact" in r.stderr
    r = _cli("lineage", "s3://elsewhere/x.json", "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "is not in the store" in r.stderr
    make_checkpoint(tmp_path / "checkpoint-1")
    r = _cli("evaluate-checkpoints", "--checkpoints", str(tmp_path), "--run-id", "a/b", "--benchmarks", "toy")
    assert r.returncode == 2 and "--run-id 'a/b'" in r.stderr


def test_runs_and_lineage_commands_read_the_store(tmp_path):
    """`codealign runs` and `lineage` on a run recorded in a store (written here through the
    same record functions the flow uses)."""
    from codealign.tasks.artifacts import runs
    from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.evaluation.units import result_rows, score_unit

    ckpts = [fingerprint(str(make_checkpoint(tmp_path / "train" / f"checkpoint-{s}"))) for s in (1, 2)]
    (tmp_path / "train" / "checkpoint-2" / "step.txt").write_text("2")
    ckpts[1] = fingerprint(str(tmp_path / "train" / "checkpoint-2"))
    store = ArtifactStore(str(tmp_path / "store"))
    cfg = CheckpointEvalConfig(checkpoints=[str(tmp_path / "train")], store=store.root, benchmarks=["toy"],
                               modes=["flow"], ks=[1])
    good, bad = make_units(cfg, ckpts)
    samples = store.put_jsonl(good.artifact("samples.jsonl"), [{"task_id": "toy/0", "index": 0}],
                              ArtifactMeta("samples", {"task": "sample-unit"},
                                           (InputRef(good.checkpoint.uri, good.checkpoint.sha256),)))
    verdicts = store.put_jsonl(good.artifact("verdicts.jsonl"),
                               [{"benchmark": "toy", "task_id": "toy/0", "sample_index": 0, "passed": True}],
                               ArtifactMeta("verdicts", {"task": "execute-unit"},
                                            (InputRef(samples.uri, samples.sha256),)))
    score_unit(good, cfg, verdicts, {"task": "score-unit"})
    write_manifest(store, "r1", cfg, [good, bad], {"flow": "evaluate-checkpoints"})
    runs.write_status(store, runs.RunStatus("r1", "failed", failed={bad.key: "sample Failed: CheckpointError: boom"}),
                      {})
    runs.write_results(store, "r1", *result_rows(store, [good, bad]), {})

    r = _cli("runs", "--store", store.root)
    assert r.returncode == 0 and "r1" in r.stdout and "failed" in r.stdout and "1/2" in r.stdout
    assert "evaluate-checkpoints" in r.stdout
    assert f"r1: failed: checkpoint-2 toy flow ({bad.key}): sample Failed: CheckpointError: boom" in r.stdout
    r = _cli("lineage", "r1", "--store", store.root, "--json")
    tree = json.loads(r.stdout)
    assert tree["kind"] == "run-results"
    chain = tree["inputs"][0]
    kinds = [chain["kind"], chain["inputs"][0]["kind"], chain["inputs"][0]["inputs"][0]["kind"]]
    assert kinds == ["scores", "verdicts", "samples"]
    leaf = chain["inputs"][0]["inputs"][0]["inputs"][0]
    assert leaf["external"] and leaf["uri"].endswith("checkpoint-1") and leaf["sha256"] == good.checkpoint.sha256
    r = _cli("lineage", "r1", "--store", store.root)
    assert r.returncode == 0 and "checkpoint-1" in r.stdout.splitlines()[-1]


@pytest.mark.parametrize("address, calls, raises", [
    ("ray://127.0.0.2:10001", 2, False),  # Ray Client: a failed server start is retried
    ("127.0.0.2:6379", 1, True),  # a plain cluster address: the error is the user's to see
])
def test_connect_ray_retries_only_ray_client_start_failures(monkeypatch, address, calls, raises):
    import ray

    from codealign.flows import runtime as flow

    seen = []

    def init(address):
        seen.append(address)
        if len(seen) == 1:
            raise ConnectionAbortedError("Initialization failure from server")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(flow.time, "sleep", lambda s: None)
    if raises:
        with pytest.raises(ConnectionAbortedError):
            flow.connect_ray(address)
    else:
        flow.connect_ray(address)
    assert seen == [address] * calls


def test_connect_ray_without_address_starts_a_fresh_local_instance(monkeypatch):
    import ray

    from codealign.flows import runtime as flow

    seen = []
    monkeypatch.setattr(ray, "init", lambda address: seen.append(address))
    flow.connect_ray(None)
    assert seen == ["local"]


def test_a_benchmark_from_a_user_file_is_keyed_by_its_content(tmp_path):
    import shutil

    data = tmp_path / "EvoEval_difficult.jsonl"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "local_benchmarks" / "EvoEval_difficult.jsonl", data)
    ckpt = fingerprint(str(make_checkpoint(tmp_path / "checkpoint-1")))
    cfg = CheckpointEvalConfig(checkpoints=["x"], benchmarks=[f"evoeval:{data}", "toy"], modes=["flow"])
    before = [u.key for u in make_units(cfg, [ckpt])]
    data.write_text(data.read_text().replace("\n", "\n\n", 1))  # another version of the file
    after = [u.key for u in make_units(cfg, [ckpt])]
    assert after[0] != before[0] and after[1] == before[1]  # the shipped benchmark's unit is unchanged


def test_units_of_one_checkpoint_and_mode_are_sampled_in_one_call_each_keeping_its_artifact(tmp_path, monkeypatch):
    """sample_units: one sampling call for every unit of the group not yet sampled; each unit's
    samples.jsonl its own artifact; a unit sampled before is reused, not sampled again."""
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.evaluation import units as ev
    from codealign.tasks.generation.samples import SampleRecord

    calls = []

    def fake_sample_model(path, mode, config, problems):
        calls.append(sorted(problems))
        return [SampleRecord(name, p.task_id, 0, "prompt", "raw", None, "solution", 1, 0.0, "stop")
                for name, group in problems.items() for p in group]

    monkeypatch.setattr(ev, "sample_model", fake_sample_model)
    monkeypatch.setattr("codealign.tasks.generation.sampling.release_engines", lambda keep=None: None)
    ckpt = fingerprint(str(make_checkpoint(tmp_path / "ckpt")))
    store = ArtifactStore(str(tmp_path / "store"))
    cfg = CheckpointEvalConfig(checkpoints=[str(tmp_path / "ckpt")], store=store.root, limit=2,
                               benchmarks=["toy", "humaneval", "humaneval+"], modes=["command", "flow"], ks=[1])
    units = make_units(cfg, [ckpt])
    groups = ev.sampling_groups(units)
    assert [[(u.benchmark, u.mode) for u in g] for g in groups] == [
        [("toy", "command"), ("humaneval", "command"), ("humaneval+", "command")],
        [("toy", "flow"), ("humaneval", "flow"), ("humaneval+", "flow")]]

    first = ev.sample_unit(groups[0][1], cfg, {"task": "sample-units"})  # humaneval alone, earlier
    assert calls == [["humaneval"]]
    refs = ev.sample_units(groups[0], cfg, {"task": "sample-units"})
    assert calls == [["humaneval"], ["humaneval+", "toy"]]  # one call for the two not yet sampled
    assert refs[groups[0][1].key] == first  # reused as it was
    for unit in groups[0]:
        rows = store.get_jsonl(refs[unit.key].uri)
        assert [r["benchmark"] for r in rows] == [unit.benchmark] * 2, unit.benchmark
    with pytest.raises(ValueError, match="one checkpoint and one mode"):
        ev.sample_units(units, cfg, {})
