"""Evaluate one model end to end: build prompts, sample with vLLM, extract code, execute, score.

Writes, per run directory: ``samples.jsonl`` (prompt, raw text and extracted code side by
side, token counts, log-probabilities), ``verdicts.jsonl`` and ``scores.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.benchmarks import Problem, load_benchmark
from tasks.postprocess import command_solution, flow_completion
from tasks.prompts import PromptSpec, Shot, build_prompt, load_shots, mbpp_prompt_shots, stop_sequences
from tasks.samples import Sample, write_json_atomic, write_jsonl_atomic
from tasks.sampling import EngineSettings, SamplingSettings, generate, get_engine
from tasks.sandbox.limits import Limits


class EvaluateConfig(BaseModel):
    """What `codealign evaluate` runs (also the Prefect UI form of the evaluation flows)."""

    model: str
    benchmarks: list[str] = Field(default_factory=lambda: ["humaneval"])
    mode: str = Field("command", pattern="^(command|flow)$")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    shots: int = 0
    shots_file: str | None = None
    ks: list[int] = Field(default_factory=lambda: [1, 10])
    limit: int | None = Field(None, ge=1, description="first N problems per benchmark (quick runs)")
    split: str | None = None
    limits: Limits = Field(default_factory=Limits)
    workers: int | None = None


@dataclass
class SampleRecord:
    """One sampled answer with everything needed to audit it."""

    benchmark: str
    task_id: str
    index: int
    prompt: str
    raw: str
    completion: str | None
    solution: str | None
    n_tokens: int
    cumulative_logprob: float | None
    finish_reason: str | None

    def to_sample(self) -> Sample:
        return Sample(self.task_id, self.index, self.completion, self.solution)


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def select_problems(config: EvaluateConfig) -> dict[str, list[Problem]]:
    selected = {}
    for name in config.benchmarks:
        problems = load_benchmark(name, config.split if name.startswith("mbpp") else None)
        selected[name] = problems[: config.limit] if config.limit else problems
    return selected


def _shots(config: EvaluateConfig) -> list[Shot]:
    if config.mode != "command" or config.shots == 0:
        return []
    return load_shots(config.shots_file) if config.shots_file else mbpp_prompt_shots()


def sample_model(config: EvaluateConfig, problems: dict[str, list[Problem]], llm: Any = None,
                 tokenizer: Any = None) -> list[SampleRecord]:
    """Prompts → vLLM → post-processed sample records, for every problem of every benchmark."""
    tokenizer = tokenizer or load_tokenizer(config.model)
    spec = PromptSpec(config.mode, config.shots, config.shots_file)  # validates shots
    shots = _shots(config)
    flat = [p for name in config.benchmarks for p in problems[name]]
    prompts = [build_prompt(p, spec, tokenizer, config.model, shots) for p in flat]
    stops = [stop_sequences(p, spec, tokenizer) for p in flat]
    llm = llm or get_engine(config.model, config.engine)
    outputs = generate(llm, prompts, config.sampling, stops)
    records = []
    for problem, prompt, stop, gens in zip(flat, prompts, stops, outputs):
        for i, g in enumerate(gens):
            if config.mode == "command":
                completion, solution = None, command_solution(problem, g.text)
            else:
                completion, solution = flow_completion(problem, g.text, stop), None
            records.append(SampleRecord(problem.benchmark, problem.task_id, i, prompt, g.text, completion, solution,
                                        g.n_tokens, g.cumulative_logprob, g.finish_reason))
    return records


def evaluate_model(config: EvaluateConfig, out_dir: str | Path, llm: Any = None, tokenizer: Any = None,
                   progress: bool = False) -> dict[str, Any]:
    """Sample, execute, score; write everything under ``out_dir``; return the scores."""
    from tasks.execute import execute
    from tasks.scoring import score

    out = Path(out_dir)
    problems = select_problems(config)
    records = sample_model(config, problems, llm, tokenizer)
    write_jsonl_atomic(out / "samples.jsonl", (asdict(r) for r in records))
    verdicts = []
    for name in config.benchmarks:
        mine = [r for r in records if r.benchmark == name]
        verdicts += execute(problems[name], [r.to_sample() for r in mine], config.limits, config.workers,
                            progress=progress)
    write_jsonl_atomic(out / "verdicts.jsonl", (v.to_json() for v in verdicts))
    scores = score(verdicts, config.ks)
    scores["config"] = json.loads(config.model_dump_json())
    write_json_atomic(out / "scores.json", scores)
    return scores

