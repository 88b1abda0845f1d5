"""The toy task families: deterministic, split without leakage, solvable, all three modes."""

from __future__ import annotations

import pytest

from codealign.tasks.evaluation.execute import execute
from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.registry import load_benchmark
from codealign.tasks.toy.families import (
    FAMILIES,
    TOY_MODEL_TRAIN_PER_FAMILY,
    generate,
    toy_tasks,
)
from codealign.tasks.toy.sources import toy_source


def test_at_least_six_families_with_300_held_out_tasks_interleaved():
    assert len(FAMILIES) >= 6
    held_out = load_benchmark("toy")
    assert len(held_out) >= 300 and len(held_out) == 50 * len(FAMILIES)
    assert all(p.split == "test" for p in held_out)
    # any prefix (a test's or a user's --limit) covers the families evenly
    assert [p.task_id.split("/")[1] for p in held_out[:len(FAMILIES)]] == list(FAMILIES)
    assert len({p.task_id for p in held_out}) == len(held_out)


def test_toy_train_instructions_are_new_to_the_toy_models():
    """Alignment data are instructions the starting models were not trained on."""
    seen = {t.name for t in toy_tasks("train", TOY_MODEL_TRAIN_PER_FAMILY)}
    items = toy_source("toy-train").instructions
    assert len(items) == 345  # 80 per family, fewer where a family has no more training tasks
    assert not {item.id.rsplit("/", 1)[1] for item in items} & seen


def test_generation_is_deterministic():
    for family in FAMILIES:
        assert generate(7, family) == generate(7, family)
    assert [p.task_id for p in load_benchmark("toy")] == [p.task_id for p in load_benchmark("toy")]


def test_train_and_test_splits_do_not_share_tasks():
    train = {t.identity for t in toy_tasks("train", 200)}
    test = {t.identity for t in toy_tasks("test", 10)}
    assert train and test and not train & test


def test_every_mode_is_available_and_reference_solutions_pass():
    toy, infill = load_benchmark("toy"), load_benchmark("toy-infill")
    assert all(p.instruction.startswith("Write a Python function") for p in toy)
    assert all(p.prompt.startswith("def ") and '"""' in p.prompt for p in toy)
    assert all(p.suffix == "    return result\n" and p.canonical_completion for p in infill)
    problems = toy + infill
    samples = [Sample(p.task_id, 0, p.canonical_completion) for p in toy]
    verdicts = execute(toy, samples) + execute(infill, [Sample(p.task_id, 0, p.canonical_completion) for p in infill])
    assert all(v.passed for v in verdicts), [v for v in verdicts if not v.passed][:3]
    # and a wrong answer fails
    wrong = execute(toy[:6], [Sample(p.task_id, 0, "    return None\n") for p in toy[:6]])
    assert not any(v.passed for v in wrong)
    assert len(problems) == 600


def test_toy_training_prompts_are_what_the_evaluator_sends(toy_model_paths):
    """The toy models are trained on exactly the text the evaluator prompts with: FIM and plain
    instructions for toy-base, the chat template for toy-instruct (one home: generation/prompts)."""
    from codealign.tasks.evaluation.pipeline import load_tokenizer
    from codealign.tasks.generation.prompts import PromptSpec, build_prompt
    from codealign.tasks.toy.families import to_problem
    from codealign.tasks.toy.models import (
        fim_example,
        instruct_pairs,
        plain_instruction_example,
    )

    base, instruct = (load_tokenizer(str(toy_model_paths[name])) for name in ("toy-base", "toy-instruct"))
    for task in toy_tasks("train", 2):
        infill = to_problem(task, "toy-infill")
        assert fim_example(task) == (build_prompt(infill, PromptSpec("flow"), base), infill.canonical_completion)
        assert plain_instruction_example(task)[0] == build_prompt(to_problem(task), PromptSpec("command"), base)
        (prompt,), _ = instruct_pairs([task], 0, instruct)
        assert prompt == build_prompt(to_problem(task), PromptSpec("command"), instruct)


def test_building_the_toy_models_prints_readable_progress_on_stderr_only(tmp_path, capfd):
    """The first `make sweep` builds the toy models: their training says step and loss on stderr
    (where the other libraries' output goes), never Transformers' raw log dicts on stdout."""
    from codealign.tasks.toy.models import ToyModelConfig, build_toy_models

    tiny = ToyModelConfig(train_per_family=12, vocab_size=600, hidden_size=32, intermediate_size=64, num_layers=1,
                          num_heads=2, max_length=128, base_epochs=1, instruct_epochs=0.2, batch_size=2)
    paths = build_toy_models(root=tmp_path, config=tiny)
    assert all((p / "config.json").is_file() for p in paths.values())
    out, err = capfd.readouterr()
    assert "'loss'" not in out + err and "{'" not in out
    assert "codealign: toy-base: step 25/" in err and ", loss " in err


BUILD = """
import hashlib, os, sys
from pathlib import Path
os.cpu_count = lambda: int(sys.argv[2])  # what the machine says it has
from codealign.tasks.toy.models import ToyModelConfig, build_toy_models
config = ToyModelConfig(train_per_family=12, vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1,
                        num_heads=2, base_epochs=0.5, instruct_epochs=0.5, batch_size=8)
for name, path in sorted(build_toy_models(Path(sys.argv[1]), config, force=True).items()):
    for f in sorted(path.iterdir()):
        print(name, f.name, hashlib.sha256(f.read_bytes()).hexdigest())
"""


@pytest.mark.slow
def test_the_toy_models_build_bit_identically_whatever_the_core_count(tmp_path):
    """Two builds of (shrunken) toy models, on 'machines' of 1 and 8 cores with different hash
    seeds: the same bytes, weights included (torch's CPU reductions depend on the thread count,
    which is now fixed by the config, not taken from the machine)."""
    import os
    import subprocess
    import sys

    outputs = []
    for cores, hash_seed in ((1, "1"), (8, "2")):
        done = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / f"cores{cores}"), str(cores)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed},
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert "model.safetensors" in outputs[0] and outputs[0] == outputs[1]
