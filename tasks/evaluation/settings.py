"""One evaluation-settings model, shared by every way codealign evaluates.

``codealign evaluate`` (one model), the units of ``evaluate-checkpoints`` and the sweeps to come
all sample, execute and score with the same settings; they extend :class:`EvalSettings` with
what is theirs (a model, checkpoints, a store) instead of copying its fields.  The models are
pydantic, so they validate CLI input and YAML files and become the Prefect UI forms.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from codealign.tasks.generation.prompts import Mode, Shot, load_shots, mbpp_prompt_shots
from codealign.tasks.generation.sampling import EngineSettings, SamplingSettings
from codealign.tasks.problems.problem import Problem
from codealign.tasks.sandbox.limits import Limits

SHOT_COUNTS = (0, 1, 3, 5)


class EvalSettings(BaseModel):
    """What to evaluate on and how: benchmarks, sampling, engine, prompting, pass@k, sandbox."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not ignored

    benchmarks: list[str] = Field(default_factory=lambda: ["humaneval"], description="benchmark names")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    shots: int = Field(0, description="in-context demonstrations in Command mode: 0, 1, 3 or 5")
    shots_file: str | None = Field(None, description="JSONL of {instruction, code}; default: the MBPP prompt split")
    ks: list[int] = Field(default_factory=lambda: [1, 10], description="k values for pass@k")
    limit: int | None = Field(None, ge=1, description="first N problems of each benchmark (quick runs)")
    split: str | None = Field(None, description="MBPP split (prompt, test, validation, train); default: all")
    limits: Limits = Field(default_factory=Limits)
    workers: int | None = Field(None, ge=1, description="sandbox workers (default: the machine's cores)")

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, names: list[str]) -> list[str]:
        from codealign.tasks.problems.registry import BENCHMARKS

        for name in names:
            if name not in BENCHMARKS:
                raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        if not names:
            raise ValueError("at least one benchmark")
        return names

    @field_validator("shots")
    @classmethod
    def _shot_count(cls, shots: int) -> int:
        if shots not in SHOT_COUNTS:
            raise ValueError(f"shots must be 0, 1, 3 or 5, got {shots}")
        return shots

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError(f"k values must be >= 1, got {ks}")
        return sorted(set(ks))

    def result_settings(self) -> dict[str, Any]:
        """The settings that can change an evaluation's numbers (not where or how fast it runs)."""
        return json.loads(self.model_dump_json(include={"sampling", "engine", "shots", "ks", "limit", "split",
                                                        "limits"}))

    def select_problems(self, benchmarks: list[str] | None = None) -> dict[str, list[Problem]]:
        """The problems to evaluate, per benchmark (the split applies to MBPP benchmarks)."""
        from codealign.tasks.problems.registry import load_benchmark

        selected = {}
        for name in benchmarks or self.benchmarks:
            problems = load_benchmark(name, self.split if name.startswith("mbpp") else None)
            selected[name] = problems[: self.limit] if self.limit else problems
        return selected

    def shots_for(self, mode: Mode) -> list[Shot]:
        if mode != "command" or self.shots == 0:
            return []
        return load_shots(self.shots_file) if self.shots_file else mbpp_prompt_shots()


class EvaluateConfig(EvalSettings):
    """What `codealign evaluate` runs: one model, one mode."""

    model: str = Field(description="local directory, Hugging Face id, or toy-base / toy-instruct")
    mode: Mode = Field("command", description="command (instruction -> code) or flow (completion / infilling)")
