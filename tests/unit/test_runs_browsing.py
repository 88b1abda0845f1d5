"""`codealign runs` and `codealign show`: newest first, a sweep's sub-runs under it, filters by
flow, state, start time and count, JSON; one page per run.  And why listing stays fast: the
store is listed once per prefix, not probed once per item."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.store import ArtifactStore

META = ArtifactMeta("test", {"task": "test"})


def _run(store: ArtifactStore, run_id: str, flow: str, state: str, started: str, done: int = 1, items: int = 1):
    keys = [layout.unit_artifact(f"{run_id}-{i}", "scores.json") for i in range(items)]
    runs.write_manifest(store, runs.Manifest(run_id, flow, {"seed": 0},
                                             [runs.RunItem(f"{run_id}-{i}", f"item {i}", k) for i, k in
                                              enumerate(keys)]), (), {})
    for key in keys[:done]:
        store.put_json(key, {"overall": {}}, META)
    runs.write_status(store, runs.RunStatus(run_id, state, started_at=started,
                                            failed={f"{run_id}-{i}": "boom" for i in range(done, items)}), {})


@pytest.fixture
def store(tmp_path):
    st = ArtifactStore(str(tmp_path / "store"))
    _run(st, "e-old", "evaluate-checkpoints", "failed", "2026-12-01T02:00:00+00:00", done=1, items=2)
    _run(st, "sw", "alignment-sweep", "completed", "2026-12-05T02:00:00+00:00")
    _run(st, "sw-toy-fta-s0-data", "generate-preferences", "completed", "2026-12-05T02:00:05+00:00")
    _run(st, "sw-eval-starts", "evaluate-checkpoints", "completed", "2026-12-05T02:00:06+00:00")
    _run(st, "t-new", "train", "completed", "2026-12-06T02:00:00+00:00")
    st.put_json(layout.run_record("sw", layout.SWEEP_RECORD),
                {"run_id": "sw", "data_runs": {"toy-fta-s0": "sw-toy-fta-s0-data"}, "stages": [],
                 "eval_runs": {"0": ["sw-eval-starts"]}, "starts": [], "skipped": [],
                 "pieces": [{"label": "toy-fta-s0", "kind": "data", "state": "completed", "started_at": 10.0,
                             "ended_at": 25.0}],
                 "critical_path": {"seconds": 15.0, "sum_seconds": 15.0, "pieces": ["toy-fta-s0"]}}, META)
    seeds = InputRef("file:///data/seeds.jsonl", "ab")  # outside the store: a lineage root
    data = st.put_json("runs/sw/inputs.json", {}, ArtifactMeta("test", {}, (seeds,)))
    runs.write_results(st, "sw", [], (InputRef(data.uri, data.sha256),), {})
    return st


def test_runs_are_listed_newest_first_with_sub_runs_under_their_sweep(store):
    listed = runs.list_runs(store)
    assert [r.run_id for r in listed] == ["t-new", "sw", "e-old"]
    sweep = listed[1]
    assert [c.run_id for c in sweep.children] == ["sw-toy-fta-s0-data", "sw-eval-starts"]
    assert all(c.parent == "sw" for c in sweep.children)
    assert (listed[2].state, listed[2].complete, listed[2].items) == ("failed", 1, 2)


def test_filters_by_flow_state_start_and_count(store):
    assert [r.run_id for r in runs.list_runs(store, flow="train")] == ["t-new"]
    # a sub-run matches by itself when its sweep does not
    assert [r.run_id for r in runs.list_runs(store, flow="evaluate-checkpoints")] == ["sw-eval-starts", "e-old"]
    assert [r.run_id for r in runs.list_runs(store, states={"failed"})] == ["e-old"]
    assert [r.run_id for r in runs.list_runs(store, since="2026-12-05T00:00:00+00:00")] == ["t-new", "sw"]
    assert [r.run_id for r in runs.list_runs(store, limit=2)] == ["t-new", "sw"]


def test_listing_lists_the_store_once_per_prefix_instead_of_probing_each_item(store, monkeypatch):
    probes = []
    monkeypatch.setattr(ArtifactStore, "exists", lambda self, key: probes.append(key) or False)
    assert len(runs.list_runs(store)) == 3
    assert probes == []  # completeness came from the two listings


def _cli(store, *args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "codealign", *args, "--store", store.root], capture_output=True,
                          text=True, env=env, timeout=120)


def test_the_runs_command_prints_the_tree_and_json_and_refuses_a_bad_since(store):
    table = _cli(store, "runs")
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "│" in line]
    order = [next(r for r in ("t-new", "sw-toy-fta-s0-data", "sw-eval-starts", "sw", "e-old") if r in line)
             for line in lines if any(r in line for r in ("t-new", "sw", "e-old"))]
    assert order == ["t-new", "sw", "sw-toy-fta-s0-data", "sw-eval-starts", "e-old"]
    assert "└ sw-toy-fta-s0-data" in table.stdout and "e-old: failed: item 1 (e-old-1): boom" in table.stdout
    as_json = json.loads(_cli(store, "runs", "--json", "--status", "completed").stdout)
    assert [r["run_id"] for r in as_json] == ["t-new", "sw"] and len(as_json[1]["children"]) == 2
    bad = _cli(store, "runs", "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr + bad.stdout


def test_show_gives_one_page_per_run(store):
    page = json.loads(_cli(store, "show", "sw", "--json").stdout)
    assert (page["flow"], page["state"], page["started_at"]) == ("alignment-sweep", "completed",
                                                                  "2026-12-05T02:00:00+00:00")
    assert page["sub_runs"] == ["sw-toy-fta-s0-data", "sw-eval-starts"]
    assert page["critical_path"]["pieces"] == ["toy-fta-s0"] and page["pieces"][0]["label"] == "toy-fta-s0"
    assert page["lineage_roots"] == [{"uri": "file:///data/seeds.jsonl"}]
    assert page["log"].endswith("runs/sw/terminal.log") and page["config"] == {"seed": 0}
    text = _cli(store, "show", "sw")
    assert "critical path: 15 s of 15 s: toy-fta-s0" in text.stdout and "toy-fta-s0" in text.stdout
    assert _cli(store, "show", "nope").returncode == 2


def test_records_are_read_in_one_batch_and_a_damaged_run_shows_as_unreadable_without_hiding_the_others(store):
    manifest = layout.run_record("t-new", layout.MANIFEST)
    got = store.get_many([manifest, layout.run_record("sw", layout.STATUS), "runs/nobody/manifest.json"])
    assert json.loads(got[manifest])["run_id"] == "t-new"
    assert json.loads(got[layout.run_record("sw", layout.STATUS)])["state"] == "completed"
    assert isinstance(got["runs/nobody/manifest.json"], runs.MissingArtifact)
    with open(store.path(manifest), "ab") as f:  # modified behind the store's back
        f.write(b" ")
    assert isinstance(store.get_many([manifest])[manifest], runs.IntegrityError)
    listed = {s.run_id: s for s in runs.list_runs(store)}
    assert listed["t-new"].state == "unreadable" and "does not match the recorded" in listed["t-new"].failed[0]
    assert listed["sw"].state == "completed" and len(listed["sw"].children) == 2
