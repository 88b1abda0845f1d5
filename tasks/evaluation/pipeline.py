"""The evaluation pipeline's stages — sample, execute, score — as plain functions.

Every evaluation in codealign is these three stages: ``codealign evaluate`` writes their
outputs to a directory (:func:`evaluate_model`), the units of ``evaluate-checkpoints`` store
them as artifacts (tasks/evaluation/units.py), ``codealign demo`` executes and scores sample
files.  Files written: ``generations.jsonl`` (prompt, raw text and extracted code side by side,
token counts, log-probabilities), ``samples.jsonl`` and ``eval_results.json`` (evalplus' formats:
tasks/evaluation/evalplus_output.py), ``verdicts.jsonl`` and ``scores.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codealign.tasks.evaluation import evalplus_output
from codealign.tasks.evaluation.efficiency import label_efficiency
from codealign.tasks.evaluation.generation_fidelity import label_fidelity
from codealign.tasks.evaluation.scoring import score
from codealign.tasks.evaluation.settings import EvalSettings, EvaluateConfig
from codealign.tasks.evaluation.taxonomy import label_failures
from codealign.tasks.files import write_json_atomic, write_jsonl_atomic
from codealign.tasks.generation.postprocess import command_solution, flow_completion
from codealign.tasks.generation.prompts import (
    Mode,
    PromptSpec,
    build_prompt,
    stop_sequences,
)
from codealign.tasks.generation.samples import Sample, SampleRecord
from codealign.tasks.generation.sampling import generate, get_engine
from codealign.tasks.problems.problem import Problem
from codealign.tasks.sandbox.records import Verdict


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def sample_model(model: str, mode: Mode, settings: EvalSettings, problems: dict[str, list[Problem]],
                 llm: Any = None, tokenizer: Any = None) -> list[SampleRecord]:
    """Stage 1: prompts → vLLM → post-processed sample records, for every given problem.
    ``llm`` defaults to this process's engine for ``model`` (started on first use)."""
    tokenizer = tokenizer or load_tokenizer(model)
    spec = PromptSpec(mode, settings.shots, settings.shots_file)
    shots = settings.shots_for(mode)
    flat = [p for group in problems.values() for p in group]
    prompts = [build_prompt(p, spec, tokenizer, model, shots) for p in flat]
    stops = [stop_sequences(p, spec, tokenizer) for p in flat]
    llm = llm or get_engine(model, settings.engine)
    # Sample once, judge many: a prompt (with its stops) that several problems share — HumanEval
    # and HumanEval+, task by task — is generated once.  Each prompt's seed comes from its text,
    # so its samples are what sampling it alone would give.
    distinct = list(dict.fromkeys(zip(prompts, map(tuple, stops))))
    generated = generate(llm, [p for p, _ in distinct], settings.sampling, [list(s) for _, s in distinct])
    by_request = dict(zip(distinct, generated))
    outputs = [by_request[(p, tuple(s))] for p, s in zip(prompts, stops)]
    records = []
    for problem, prompt, stop, gens in zip(flat, prompts, stops, outputs):
        for i, g in enumerate(gens):
            if mode == "command":
                completion, solution = None, command_solution(problem, g.text)
            else:
                completion, solution = flow_completion(problem, g.text, stop), None
            records.append(SampleRecord(problem.benchmark, problem.task_id, i, prompt, g.text, completion, solution,
                                        g.n_tokens, g.cumulative_logprob, g.finish_reason))
    return records


def by_benchmark(records: Sequence[SampleRecord]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for r in records:
        grouped.setdefault(r.benchmark, []).append(r.to_sample())
    return grouped


def execute_samples(problems: dict[str, list[Problem]], samples: dict[str, list[Sample]], settings: EvalSettings,
                    progress: bool = False) -> list[Verdict]:
    """Stage 2: every benchmark's samples in the sandbox against its tests."""
    from codealign.tasks.evaluation.execute import execute

    verdicts: list[Verdict] = []
    for name, batch in samples.items():
        verdicts += execute(problems[name], batch, settings.limits, settings.workers, progress=progress)
    return verdicts


def score_verdicts(verdicts: Sequence[Verdict | dict[str, Any]], settings: EvalSettings) -> dict[str, Any]:
    """Stage 3: pass@k per benchmark and overall, failed samples by class, generation fidelity,
    efficiency."""
    return score(verdicts, settings.ks)


def evaluate_model(config: EvaluateConfig, out_dir: str | Path, llm: Any = None, tokenizer: Any = None,
                   progress: bool = False, problems: dict[str, list[Problem]] | None = None) -> dict[str, Any]:
    """Sample, execute, score; write everything under ``out_dir``; return the scores.
    ``problems`` defaults to the config's selection (benchmarks, split, limit)."""
    out = Path(out_dir)
    problems = problems if problems is not None else config.select_problems()
    records = sample_model(config.model, config.mode, config, problems, llm, tokenizer)
    write_jsonl_atomic(out / "generations.jsonl", (asdict(r) for r in records))
    write_jsonl_atomic(out / "samples.jsonl", evalplus_output.samples_lines(evalplus_output.problem_index(problems),
                                                                            records))
    verdicts = execute_samples(problems, by_benchmark(records), config, progress)
    flat, rows = [p for group in problems.values() for p in group], [asdict(r) for r in records]
    labelled = label_failures(flat, config.mode, rows, [v.to_json() for v in verdicts])
    labelled = label_fidelity(flat, config.mode, rows, labelled)
    labelled = label_efficiency(flat, labelled, workers=config.workers)
    write_jsonl_atomic(out / "verdicts.jsonl", labelled)
    for name, group in problems.items():
        results = evalplus_output.eval_results(name, group, records, labelled, config.ks)
        write_json_atomic(out / evalplus_output.results_file_name(name, list(problems)), results)
    scores = score_verdicts(labelled, config)
    scores["config"] = json.loads(config.model_dump_json())
    write_json_atomic(out / "scores.json", scores)
    return scores
