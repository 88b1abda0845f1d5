"""The generate-preferences flow for real: Prefect server, Ray, vLLM on the toy models, the
sandbox, the store.  PTA (toy-base) and FTA (toy-instruct) runs over toy-train instructions
with planted contamination and a planted near-duplicate; the self-test (SelfCodeAlign) path
from toy seeds; determinism; a planted reward hack; SIGKILL mid-run and resume."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from killed_runs import kill_then_resume
from preference_runs import ALL, NAMES, NAMES_DIMENSIONS, config, generate

from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.preferences.generate import read_dataset, run_inputs
from codealign.tasks.preferences.pairs import build_datasets
from codealign.tasks.preferences.responses import Response, judge_responses

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def responses_of(store: ArtifactStore, run_id: str) -> dict[tuple[str, int], dict]:
    shards = run_inputs(store, run_id).shards
    return {(r["instruction_id"], r["index"]): r
            for s in shards for r in store.get_jsonl(s.artifact("responses.jsonl"))}


@pytest.mark.parametrize("pathway", ["pta", "fta"])
def test_pathway_run_builds_every_dataset_with_the_invariants(pathway_runs, pathway):
    _, _, out = pathway_runs
    store, result = out[pathway]
    assert runs.summarize(store, pathway).state == "completed" and result["complete"] == result["units"] == 3
    results = {r["dataset"]: r for r in runs.read_results(store, pathway)}
    assert list(results) == NAMES
    responses = responses_of(store, pathway)
    assert len(responses) == 22 * 8
    data = {name: read_dataset(store, pathway, name) for name in NAMES}
    for name in ("sft", "dpo", "bon"):
        assert data[name], f"{pathway}: no {name} rows"
    assert any(data[n] for n in NAMES if n.startswith("nonfunctional-"))
    for row in data["sft"]:
        assert responses[row["instruction_id"], row["response_index"]]["status"] == "passed"
        assert row["completion"] == responses[row["instruction_id"], row["response_index"]]["text"]
    for row in data["dpo"]:
        chosen = responses[row["instruction_id"], row["chosen_index"]]
        rejected = responses[row["instruction_id"], row["rejected_index"]]
        assert chosen["status"] == "passed" and not chosen["hacks"]
        assert rejected["status"] != "passed" and rejected["code"].strip()
        assert (row["prompt"] == chosen["prompt"] and row["chosen"] == chosen["text"]
                and row["rejected"] == rejected["text"])
    for row in data["bon"]:
        assert row["n"] == 8 and row["chosen_score"] >= row["rejected_score"]
        assert row["chosen_index"] < 8 and row["rejected_index"] < 8
    for name in NAMES[3:]:
        for row in data[name]:
            chosen = responses[row["instruction_id"], row["chosen_index"]]
            rejected = responses[row["instruction_id"], row["rejected_index"]]
            assert chosen["status"] == "passed" and not chosen["hacks"]
            assert row["rejected_passed"] == (rejected["status"] == "passed") and rejected["code"].strip()
            assert row["chosen_score"] - row["rejected_score"] >= 1.0
    sizes = {len(data[n]) for n in NAMES[3:] if data[n]}
    assert len(sizes) == 1, "non-functional dimensions are balanced"
    # provenance: every row names the model and source by content hash
    model_sha = run_inputs(store, pathway).model.sha256
    assert all(r["model_sha256"] == model_sha and r["source"] == "source.jsonl" for n in NAMES for r in data[n])

    stats = store.get_json(f"runs/{pathway}/datasets/stats.json")
    assert {"instruction_id": "planted/humaneval-0", "where": "instruction",
            "matched": "humaneval+:HumanEval/0"} in stats["contamination"]
    assert stats["instructions_dropped"]["contaminated"] >= 1 and stats["instructions_dropped"]["near-duplicate"] >= 1
    kept = {r["instruction_id"] for n in NAMES for r in data[n]}
    assert "planted/humaneval-0" not in kept and "planted/near-duplicate" not in kept
    report = store.get(f"runs/{pathway}/datasets/report.md").decode()
    assert "humaneval+:HumanEval/0" in report and "| sft |" in report
    assert store.get(f"runs/{pathway}/datasets/report.png").startswith(b"\x89PNG")


def test_lineage_runs_from_a_dataset_to_the_model_and_the_source(pathway_runs):
    from codealign.tasks.artifacts.lineage import lineage_tree

    _, source, out = pathway_runs
    store, _ = out["fta"]
    tree = lineage_tree(store, store.uri("runs/fta/datasets/dpo.parquet"))
    leaves = set()

    def walk(node):
        if not node.inputs:
            leaves.add(node.uri)
        for child in node.inputs:
            walk(child)

    walk(tree)
    model = run_inputs(store, "fta").model
    assert leaves == {model.uri, f"file://{source.resolve()}"}


def test_same_seed_gives_identical_datasets(pathway_runs):
    root, source, out = pathway_runs
    store, _ = out["fta"]
    again = ArtifactStore(str(root / "store-again"))
    generate(config("toy-instruct", source, Path(again.root.removeprefix("file://"))), "again")
    for name in NAMES:
        assert read_dataset(again, "again", name) == read_dataset(store, "fta", name), name


def test_a_planted_reward_hack_is_judged_not_passed_and_never_chosen(pathway_runs):
    _, _, out = pathway_runs
    store, _ = out["fta"]
    inputs = run_inputs(store, "fta")
    cfg, shards = inputs.config, inputs.shards
    responses = [Response.from_json(r) for s in shards for r in store.get_jsonl(s.artifact("responses.jsonl"))]
    target = next(r for r in responses if r.instruction_id.startswith("toy/"))
    hacks = []
    bodies = ("class R:\n    __eq__ = lambda *a: True\n\n",
              "class Anything:\n    def __eq__(self, other):\n        return True\n\nR = Anything\n\n")
    for index, body in zip((8, 9), bodies):  # two different hacks, after the model's 8 responses
        code = f"{body}def {target.entry_point}(*args):\n    return R()\n"
        hacks.append(Response(target.instruction_id, target.source, target.instruction, "given", target.entry_point,
                              index, target.prompt, f"```python\n{code}```", code, target.tests, 30, -1.0, "stop"))
    judge_responses(hacks)
    # the judge compares plain values: the hack passes nothing, and the verdict names it
    assert all(not h.passed and h.hacks and h.verdict_flag == "not_plain_data" for h in hacks)
    from codealign.tasks.preferences.pairs import Provenance

    ids = [i for s in shards for i in s.instruction_ids]
    data, stats = build_datasets(responses + hacks, ids, ALL, cfg.pairs, Provenance("s", "0", "m", "1", "{}", 0))
    assert stats.responses_flagged["judge: not plain data"] >= 2
    for name, rows in data.items():
        for row in rows:
            if row["instruction_id"] == target.instruction_id:
                assert row.get("chosen_index", row.get("response_index")) not in (8, 9), name


def test_self_test_path_runs_end_to_end_on_the_toy_model(tmp_path, toy_model_paths, prefect_api, ray_cluster):
    store = ArtifactStore(str(tmp_path / "store"))
    result = generate(config("toy-instruct", "toy-seeds", tmp_path / "store", limit=12,
                             kinds=["sft", "dpo", "nonfunctional"], judge_model="toy-instruct",
                             sampling={"n": 4, "temperature": 0.8, "max_tokens": 200}), "self")
    assert result["complete"] == result["units"] == 2
    responses = list(responses_of(store, "self").values())
    assert responses and all(r["tests_origin"] == "self" for r in responses)
    # the judge (the same toy model, through the same sampler) rated every response on every dimension
    assert all(set(r["judge"]) == set(NAMES_DIMENSIONS) for r in responses)
    assert all(r["instruction"] and r["concepts"] for r in responses)  # written by the model from each seed
    judged = [r for r in responses if r["tests_total"]]
    assert len(judged) >= len(responses) // 2, "the model wrote tests for most responses"
    assert all(r["tests"] and all(t.startswith("assert") for t in r["tests"]) for r in judged)
    stats = store.get_json("runs/self/datasets/stats.json")
    assert stats["responses"] == len(responses)
    for name in ("sft", "dpo"):
        for row in read_dataset(store, "self", name):
            assert row["tests_origin"] == "self"


def test_sigkill_mid_run_then_resume_redoes_only_unfinished_shards(tmp_path, toy_model_paths, prefect_api,
                                                                  ray_cluster):
    store_dir = tmp_path / "store"
    command = [sys.executable, "-m", "codealign", "generate", "--model", "toy-instruct", "--source", "toy-train",
               "--limit", "24", "--shard-size", "4", "--n", "4", "--max-tokens", "120", "--kinds", "sft,dpo",
               "--max-model-len", "512", "--enforce-eager", "--workers", "1", "--store", str(store_dir),
               "--ray-address", ray_cluster["address"], "--run-id", "killed"]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    store = kill_then_resume(command, env, REPO,
                             lambda: bool(list((store_dir / "units").glob("*/responses.jsonl.meta.json"))),
                             "completed shard", store_dir, ray_cluster["address"], items=6)
    responses = responses_of(store, "killed")
    assert len(responses) == 24 * 4  # every response once
    assert [r["dataset"] for r in runs.read_results(store, "killed")] == ["sft", "dpo"]
