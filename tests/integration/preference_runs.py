"""The generate-preferences runs several test modules share (the session fixture
``pathway_runs`` in conftest.py): PTA from toy-base and FTA from toy-instruct over a planted
source of toy-train instructions."""

from __future__ import annotations

import json
from pathlib import Path

from codealign.tasks.preferences.generate import GenerateConfig
from codealign.tasks.preferences.pairs import dataset_names
from codealign.tasks.preferences.sources import load_source

ALL = ["sft", "dpo", "bon", "nonfunctional"]
NAMES_DIMENSIONS = ["instruction_following", "readability", "complexity", "style", "explanation"]
NAMES = dataset_names(ALL, NAMES_DIMENSIONS)


def planted_source(path: Path) -> Path:
    """20 toy-train instructions, a HumanEval task (contamination) and a near-duplicate of the
    longest instruction (its final "." made "!")."""
    from codealign.tasks.problems.registry import load_benchmark

    items = load_source("toy-train").instructions[::6][:20]
    records = [{"id": i.id, "instruction": i.instruction, "tests": list(i.tests), "entry_point": i.entry_point,
                "prompt": i.prompt} for i in items]
    he0 = load_benchmark("humaneval+")[0]
    records.append({"id": "planted/humaneval-0", "instruction": f"Complete this function.\n{he0.prompt}",
                    "tests": ["assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False"],
                    "entry_point": "has_close_elements", "prompt": he0.prompt})
    longest = max(records[:-1], key=lambda r: len(r["instruction"]))
    records.append({**longest, "id": "planted/near-duplicate", "instruction": longest["instruction"][:-1] + "!"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def config(model: str, source: Path | str, store: Path, **overrides) -> GenerateConfig:
    base = dict(model=model, source=str(source), store=str(store), kinds=ALL, shard_size=8, workers=1,
                sampling={"n": 8, "temperature": 0.8, "top_p": 0.95, "max_tokens": 160},
                engine={"max_model_len": 512, "enforce_eager": True})
    return GenerateConfig.model_validate({**base, **overrides})


def generate(cfg: GenerateConfig, run_id: str) -> dict:
    from codealign.flows import registry

    return registry.run("generate-preferences", cfg, run_id)
