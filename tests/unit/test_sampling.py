"""A real vLLM engine on the toy models: seeded sampling and end-to-end evaluation.

Engines are expensive to start on a CPU, so each toy model gets one engine for the whole
session (fixtures in conftest.py), shared by every test here.
"""

from __future__ import annotations

import json

import pytest

from codealign.tasks.evaluation.pipeline import evaluate_model
from codealign.tasks.evaluation.settings import EvaluateConfig
from codealign.tasks.generation.prompts import PromptSpec, build_prompt
from codealign.tasks.generation.sampling import SamplingSettings, generate
from codealign.tasks.problems.registry import load_benchmark

pytestmark = pytest.mark.slow


def _flow_prompts(tokenizer, n_problems: int = 6) -> list[str]:
    return [build_prompt(p, PromptSpec("flow"), tokenizer) for p in load_benchmark("toy")[:n_problems]]


def test_same_seed_same_samples_other_seed_differs(toy_base):
    llm, tokenizer, _ = toy_base
    prompts = _flow_prompts(tokenizer)
    settings = SamplingSettings(n=4, temperature=0.8, max_tokens=48, seed=123)
    first = generate(llm, prompts, settings)
    reordered = generate(llm, list(reversed(prompts)), settings)[::-1]  # batch order does not matter
    other = generate(llm, prompts, settings.model_copy(update={"seed": 124}))
    texts = lambda gens: [[g.text for g in row] for row in gens]  # noqa: E731
    assert texts(first) == texts(generate(llm, prompts, settings)) == texts(reordered)
    assert texts(first) != texts(other)
    assert len(first) == len(prompts) and all(len(row) == 4 for row in first)
    assert all(g.n_tokens > 0 and isinstance(g.cumulative_logprob, float) for row in first for g in row)


def test_stop_sequences_cut_generation(toy_base):
    llm, tokenizer, _ = toy_base
    prompts = _flow_prompts(tokenizer, 3)
    gens = generate(llm, prompts, SamplingSettings(n=2, temperature=0.8, max_tokens=64), [["return"]] * 3)
    assert all("return" not in g.text for row in gens for g in row)


@pytest.mark.parametrize("mode,benchmark", [("flow", "toy"), ("flow", "toy-infill"), ("command", "toy")])
def test_evaluate_toy_base(toy_base, tmp_path, mode, benchmark):
    llm, tokenizer, path = toy_base
    config = EvaluateConfig(model=path, benchmarks=[benchmark], mode=mode, ks=[1, 2], limit=18,
                            sampling=SamplingSettings(n=2, temperature=0.8, max_tokens=96))
    scores = evaluate_model(config, tmp_path, llm=llm, tokenizer=tokenizer)
    samples = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    verdicts = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert len(samples) == len(verdicts) == 36
    assert all(s["raw"] is not None and s["prompt"] for s in samples)
    # samples.jsonl is what evalplus reads: task_id and the full program judged, nothing else
    evalplus = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(evalplus) == 36 and all(set(s) == {"task_id", "solution"} and s["solution"] for s in evalplus)
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert sum(len(rows) for rows in results["eval"].values()) == 36
    row = scores["benchmarks"][benchmark]
    assert row["tasks"] == 18 and 0.0 <= row["pass@1"] <= row["pass@2"] <= 1.0
    assert results["pass_at_k"] == {"base": {"pass@1": pytest.approx(row["pass@1"]),
                                             "pass@2": pytest.approx(row["pass@2"])}}
    if mode == "flow" and benchmark == "toy":
        assert row["pass@1"] > 0, "toy-base should solve some held-out toy tasks in Flow mode"


def test_evaluate_toy_instruct_command_mode_and_humaneval_subset(toy_instruct, tmp_path):
    llm, tokenizer, path = toy_instruct
    config = EvaluateConfig(model=path, benchmarks=["toy", "humaneval"], mode="command", ks=[1], limit=12,
                            sampling=SamplingSettings(n=2, temperature=0.8, max_tokens=128))
    scores = evaluate_model(config, tmp_path, llm=llm, tokenizer=tokenizer)
    samples = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert {s["benchmark"] for s in samples} == {"toy", "humaneval"}
    assert all(s["prompt"].startswith("<|user|>") for s in samples)  # the chat template was used
    assert all(s["solution"] is not None for s in samples)
    assert scores["benchmarks"]["toy"]["pass@1"] > 0
    assert "humaneval" in scores["benchmarks"]


@pytest.mark.parametrize("mode", ["flow", "command"])
def test_evaluate_other_languages_end_to_end(toy_base, tmp_path, mode):
    """HumanEval-X and a MultiPL-E file go through the same pipeline: their own stops (Flow),
    their language's fence (Command), compiled verdicts, a failure class for every failure."""
    from pathlib import Path

    llm, tokenizer, path = toy_base
    fixture = Path(__file__).resolve().parents[1] / 'fixtures' / 'multipl_e' / 'humaneval-js-reworded.jsonl'
    multipl_e = f"multipl-e:{fixture}"
    config = EvaluateConfig(model=path, benchmarks=["humaneval-x-js", "humaneval-x-cpp", multipl_e], mode=mode,
                            ks=[1], limit=2, sampling=SamplingSettings(n=2, temperature=0.8, max_tokens=96))
    scores = evaluate_model(config, tmp_path, llm=llm, tokenizer=tokenizer)
    samples = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    verdicts = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert len(samples) == len(verdicts) == 12
    assert set(scores["benchmarks"]) == {"humaneval-x-js", "humaneval-x-cpp", multipl_e}
    assert all(v["failure"] is not None for v in verdicts if not v["passed"])
    assert all(v["efficiency"] is None for v in verdicts)  # CPU-time efficiency is for Python programs
    if mode == "flow":  # the benchmark's own stop put back: every HumanEval-X completion closes its function
        assert all(s["completion"].endswith("\n}\n") for s in samples if s["benchmark"].startswith("humaneval-x"))


def test_benchmarks_sharing_prompts_are_sampled_once_and_judged_as_if_sampled_apart(toy_instruct):
    """HumanEval and HumanEval+ (the same prompts, task by task) sampled together: each shared
    prompt is one generation request, and samples, verdicts and scores are those of sampling
    each benchmark on its own with the same seed."""
    from codealign.tasks.evaluation.pipeline import execute_samples, sample_model, score_verdicts

    llm, tokenizer, path = toy_instruct

    class Counting:  # the engine, counting the prompts it is asked to generate for
        requests = 0

        def generate(self, prompts, params, use_tqdm=False):
            Counting.requests += len(prompts)
            return llm.generate(prompts, params, use_tqdm=use_tqdm)

    config = EvaluateConfig(model=path, benchmarks=["humaneval", "humaneval+"], mode="command", ks=[1, 2], limit=4,
                            sampling=SamplingSettings(n=2, temperature=0.8, max_tokens=96, seed=7))
    problems = config.select_problems()
    together = sample_model(path, "command", config, problems, llm=Counting(), tokenizer=tokenizer)
    joint_requests, Counting.requests = Counting.requests, 0
    apart = [r for name in problems for r in sample_model(path, "command", config, {name: problems[name]},
                                                          llm=Counting(), tokenizer=tokenizer)]
    assert Counting.requests == 8 and joint_requests == len({r.prompt for r in together}) < 8
    assert together == apart  # same records, benchmark by benchmark

    def judged(records):
        from codealign.tasks.evaluation.pipeline import by_benchmark

        verdicts = [v.to_json() for v in execute_samples(problems, by_benchmark(records), config)]
        scores = score_verdicts(verdicts, config)["benchmarks"]
        return ([(v["task_id"], v["sample_index"], v["passed"], v["status"]) for v in verdicts],
                {name: {k: v for k, v in row.items() if k.startswith("pass@")} for name, row in scores.items()})

    assert judged(together) == judged(apart)


def test_a_prompt_longer_than_the_context_is_a_failure_of_its_own_and_the_run_goes_on(toy_base, tmp_path):
    """`codealign evaluate --model toy-base --benchmarks humaneval+` used to end with vLLM's
    "input_tokens 513": HumanEval+ prompts run past toy-base's 512-token context.  Now each such
    sample is recorded as `prompt_too_long`, and the other prompts are sampled and judged."""
    from codealign.tasks.generation.sampling import PROMPT_TOO_LONG, context_length

    llm, tokenizer, path = toy_base
    limit = context_length(llm)
    problems = load_benchmark("humaneval+")
    lengths = {p.task_id: len(tokenizer.encode(build_prompt(p, PromptSpec("flow"), tokenizer))) for p in problems}
    long_ids = [t for t, n in lengths.items() if n >= limit]
    short_ids = [t for t, n in lengths.items() if n < limit]
    assert limit and long_ids and short_ids, (limit, max(lengths.values()))
    config = EvaluateConfig(model=path, benchmarks=["humaneval+"], mode="flow", ks=[1],
                            sampling=SamplingSettings(n=1, temperature=0.0, max_tokens=16))
    chosen = {long_ids[0], short_ids[0]}
    scores = evaluate_model(config, tmp_path, llm=llm, tokenizer=tokenizer,
                            problems={"humaneval+": [p for p in problems if p.task_id in chosen]})
    generations = {r["task_id"]: r for r in map(json.loads, (tmp_path / "generations.jsonl").read_text().splitlines())}
    verdicts = {v["task_id"]: v for v in map(json.loads, (tmp_path / "verdicts.jsonl").read_text().splitlines())}
    assert generations[long_ids[0]]["finish_reason"] == PROMPT_TOO_LONG and generations[long_ids[0]]["raw"] == ""
    assert verdicts[long_ids[0]]["failure"] == "prompt_too_long" and not verdicts[long_ids[0]]["passed"]
    assert generations[short_ids[0]]["n_tokens"] > 0 and verdicts[short_ids[0]]["failure"] != "prompt_too_long"
    assert scores["benchmarks"]["humaneval+"]["tasks"] == 2
    assert scores["benchmarks"]["humaneval+"]["failures"]["prompt_too_long"] == 1
