"""A quick check of the training stack on one GPU, for a bare GPU machine (``make gpu-check``).

Why it exists: the GPU machines teams get for a quick check hold PyTorch, transformers, PEFT and
accelerate, with no network and no room for a multi-GB install; the full stack (vLLM, Ray,
Prefect) is ``make gpu-check-full``'s.  This module therefore imports only those four, TRL and
``datasets`` (pure-Python wheels from ``make gpu-wheels``' folder) and the parts of codealign
that need nothing more (the toy world, the stage config, codealign's own trainer).

What it runs, on the toy models and toy data, each through codealign's trainer
(``tasks/training/trainer.build_trainer``) with LoRA, and bf16 and gradient checkpointing on
GPU (``training_args`` turns both on when ``use_gpu``):
- a few SFT, DPO and BoNBoN steps: steps/s, tokens/s, peak GPU memory;
- the BoNBoN loss of the first batch computed on the device and on the CPU (fp32): their
  relative difference (bf16 rounds logits to ~3 significant digits);
- greedy generation of toy-base and toy-instruct through transformers: tokens/s, and whether
  the device's greedy tokens equal the CPU's (fp32 on both, so they should).

One table is printed; the exit code is 1 if a check failed.  ``--device cpu`` runs the same on
the CPU (the test suite does, to keep this script working where no GPU is).

Run: ``python -m codealign.tasks.training.gpu_check [--device cuda] [--steps 8]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the check needs beyond what a bare GPU machine holds (torch, transformers, peft, accelerate
# and their own requirements): TRL, datasets, pydantic (codealign's configs) and theirs.  `make
# gpu-wheels` downloads them, at the versions installed where it runs (the ones CI tests), for
# the GPU machine's Python; `make gpu-check` installs them from that folder with no index.
WHEEL_PACKAGES = (
    "trl", "datasets", "pyarrow", "pandas", "python-dateutil", "pytz", "tzdata", "six", "dill", "multiprocess",
    "xxhash", "fsspec", "aiohttp", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict",
    "propcache", "yarl", "idna", "jinja2", "markupsafe", "pydantic", "pydantic-core", "annotated-types",
    "typing-inspection", "typing-extensions",
)
BONBON_TOLERANCE = {"cuda": 2e-2, "cpu": 1e-5}  # relative; bf16 on GPU, fp32 on both on CPU
N_FOR_BONBON = 8


@dataclass
class Row:
    """One line of the table."""

    check: str
    steps_per_s: float | None = None
    tokens_per_s: float | None = None
    peak_mib: float | None = None
    agreement: str = ""
    ok: bool = True


def toy_rows(stage: str, tokenizer: Any, count: int) -> list[dict[str, Any]]:
    """Toy training rows of ``stage``: a task's solution (chosen) over a copy that returns None."""
    from codealign.tasks.generation.prompts import chat_instruction_prompt, fenced
    from codealign.tasks.toy.families import toy_tasks

    rows = []
    for task in toy_tasks("train", count)[:count]:
        prompt = chat_instruction_prompt(tokenizer, task.instruction, [])
        good, bad = fenced(task.source), fenced(task.source.replace("return result", "return None"))
        row: dict[str, Any] = {"instruction_id": task.identity, "prompt": prompt}
        row.update({"completion": good} if stage == "sft" else {"chosen": good, "rejected": bad})
        if stage == "bonbon":
            row["n"] = N_FOR_BONBON
        rows.append(row)
    return rows


def _spec(stage: str, model: str, root: Path, device: str, steps: int, count: int) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from codealign.tasks.artifacts.checkpoints import fingerprint
    from codealign.tasks.training.config import StageConfig
    from codealign.tasks.training.data import check_dataset
    from codealign.tasks.training.stages import make_stage

    data = root / f"{stage}.parquet"
    Dataset.from_list(toy_rows(stage, AutoTokenizer.from_pretrained(model), count)).to_parquet(str(data))
    config = StageConfig(stage=stage, pathway="fta", model=model, dataset=str(data), store=str(root / "store"),
                         adapter="lora", use_gpu=device == "cuda", per_device_train_batch_size=4, max_steps=steps,
                         warmup_steps=0, save_steps=100_000, max_length=384, workers=1)
    return make_stage(config, fingerprint(model), check_dataset(str(data), stage))


def _first_batch_loss(trainer: Any) -> float:
    import torch

    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    trainer.model.train()
    return float(loss.float().cpu())


def _dataset_tokens(dataset: Any) -> int:
    """Tokens of every tokenized sequence in TRL's processed dataset (its ``*ids`` columns)."""
    columns = [c for c in dataset.column_names if c.endswith("ids")]
    return sum(len(ids) for c in columns for ids in dataset[c])


def _train(stage: str, model: str, root: Path, device: str, steps: int) -> tuple[Row, Any]:
    import torch

    from codealign.tasks.training.trainer import build_trainer, train

    spec = _spec(stage, model, root, device, steps, count=4 * steps)
    trainer = build_trainer(spec, model, str(root / f"{stage}-{device}"), None, {}, progress=lambda _: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens = _dataset_tokens(trainer.train_dataset)
    started = time.perf_counter()
    train(trainer)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    row = Row(f"{stage} step (LoRA{', bf16, grad ckpt' if device == 'cuda' else ', fp32'})",
              steps_per_s=steps / seconds, tokens_per_s=tokens / seconds, peak_mib=peak)
    return row, trainer


def _bonbon_agreement(model: str, root: Path, device: str) -> Row:
    """The first batch's BoNBoN loss on ``device`` and on the CPU, before any step."""
    from codealign.tasks.training.trainer import build_trainer

    losses = {}
    for where in dict.fromkeys([device, "cpu"]):
        spec = _spec("bonbon", model, root, where, steps=1, count=4)
        trainer = build_trainer(spec, model, str(root / f"bonbon-loss-{where}"), None, {}, progress=lambda _: None)
        losses[where] = _first_batch_loss(trainer)
        del trainer
    if device == "cpu":  # nothing to compare against but itself: compute it twice
        spec = _spec("bonbon", model, root, "cpu", steps=1, count=4)
        again = build_trainer(spec, model, str(root / "bonbon-loss-again"), None, {}, progress=lambda _: None)
        losses["again"] = _first_batch_loss(again)
    other = losses["cpu"] if device != "cpu" else losses["again"]
    relative = abs(losses[device] - other) / max(abs(other), 1e-12)
    ok = relative <= BONBON_TOLERANCE[device]
    return Row("bonbon loss: device vs CPU", agreement=f"{losses[device]:.5f} vs {other:.5f} "
               f"(rel {relative:.1e}, tol {BONBON_TOLERANCE[device]:.0e})", ok=ok)


def _generate(name: str, path: str, device: str, new_tokens: int = 48) -> Row:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.tasks.generation.prompts import chat_instruction_prompt
    from codealign.tasks.toy.families import toy_tasks

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tasks = toy_tasks("test", 2)[:8]
    prompts = ([chat_instruction_prompt(tokenizer, t.instruction, []) for t in tasks] if "instruct" in name
               else [t.prompt for t in tasks])
    outputs = {}
    seconds = 0.0
    for where in dict.fromkeys([device, "cpu"]):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(where).eval()
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(where)
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        if where == device:
            seconds = time.perf_counter() - started
        outputs[where] = out[:, batch["input_ids"].shape[1]:].cpu()
    same = bool((outputs[device] == outputs["cpu"]).all())
    return Row(f"greedy generation {name} (fp32)", tokens_per_s=outputs[device].numel() / seconds,
               agreement="same tokens as CPU" if same else "tokens differ from CPU", ok=same)


def run_checks(device: str, steps: int) -> list[Row]:
    import torch

    from codealign.tasks.generation.models import resolve_model

    torch.manual_seed(0)
    base, instruct = resolve_model("toy-base"), resolve_model("toy-instruct")
    rows = []
    with tempfile.TemporaryDirectory(prefix="codealign-gpu-check-") as tmp:
        root = Path(tmp)
        for stage in ("sft", "dpo", "bonbon"):
            row, trainer = _train(stage, instruct, root, device, steps)
            rows.append(row)
            del trainer
        rows.append(_bonbon_agreement(instruct, root, device))
    rows.append(_generate("toy-base", base, device))
    rows.append(_generate("toy-instruct", instruct, device))
    return rows


def render(rows: list[Row], device: str, header: str) -> str:
    def num(value: float | None, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-".rjust(int(fmt.split(".")[0]))

    lines = [header, "", f"{'check':44} {'steps/s':>8} {'tokens/s':>10} {'peak MiB':>9}  {'ok':3} agreement"]
    for r in rows:
        lines.append(f"{r.check:44} {num(r.steps_per_s, '8.2f')} {num(r.tokens_per_s, '10.0f')} "
                     f"{num(r.peak_mib, '9.0f')}  {'yes' if r.ok else 'NO':3} {r.agreement}")
    return "\n".join(lines)


def requirements() -> list[str]:
    """``name==version`` of each of WHEEL_PACKAGES as installed here."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in WHEEL_PACKAGES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per stage")
    parser.add_argument("--requirements", action="store_true",
                        help="print the pinned packages `make gpu-wheels` downloads, and exit")
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(requirements()))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch (use --device cpu to run the check on the CPU)",
              file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()  # one table, not a page of progress bars
    transformers.logging.disable_progress_bar()
    started = time.perf_counter()
    rows = run_checks(args.device, args.steps)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(render(rows, args.device, f"codealign gpu-check on {name}: torch {torch.__version__}, "
                 f"{args.steps} steps per stage, {time.perf_counter() - started:.0f} s in all"))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
