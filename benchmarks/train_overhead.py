"""What codealign's Ray Train path costs over plain TRL, for the same DPO stage.

Why: a training stage runs TRL inside Ray Train workers (TorchTrainer, gloo, the report
callback persisting checkpoints to the store, the progress queue); that wrapping should cost
little (target: one Ray Train worker trains at >= 0.95x plain TRL's examples/s).

On the same machine in one run, one DPO config (toy-instruct, LoRA r=16, toy pairs: a task's
solution over a broken copy of it), one epoch:

1. plain TRL: the trainer ``tasks/training/trainer.py`` builds, trained in a fresh process
   (no Ray, no Prefect) with the machine's cores;
2. codealign's Ray Train path (``flows/train.fit_stage``) with one worker holding the same cores;
3. the same with two workers (one core each; the global batch doubles, so half the steps).

Throughput is the trainer's own examples/s (its train_runtime: the steps, not process start);
the wall time from start to trained (imports, worker start-up, model load) is shown beside it.
Peak memory is each worker's peak RSS.

Run: ``python benchmarks/train_overhead.py [--pairs 256] [--batch-size 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
DONE = re.compile(r"done on worker (\d+): ([\d.]+)s training, ([\d.]+) examples/s, peak RSS (\d+) MiB")


def make_spec(root: Path, pairs: int, batch_size: int, workers: int, cpus_per_worker: int):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from codealign.tasks.artifacts.checkpoints import fingerprint
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.generation.prompts import chat_instruction_prompt, fenced
    from codealign.tasks.toy.families import toy_tasks
    from codealign.tasks.training.config import StageConfig
    from codealign.tasks.training.data import check_dataset
    from codealign.tasks.training.stages import make_stage

    model = resolve_model("toy-instruct")
    data = root / "pairs.parquet"
    if not data.exists():
        tokenizer = AutoTokenizer.from_pretrained(model)
        rows = [{"instruction_id": t.identity, "prompt": chat_instruction_prompt(tokenizer, t.instruction, []),
                 "chosen": fenced(t.source), "rejected": fenced(t.source.replace("return result", "return None"))}
                for t in toy_tasks("train", pairs)[:pairs]]
        Dataset.from_list(rows).to_parquet(str(data))
    config = StageConfig(stage="dpo", pathway="fta", model=model, dataset=str(data),
                         per_device_train_batch_size=batch_size, workers=workers, cpus_per_worker=cpus_per_worker,
                         store=str(root / f"store-{workers}w"),
                         warmup_steps=5, save_steps=100_000, max_length=384)
    return make_stage(config, fingerprint(model), check_dataset(str(data), "dpo"))


def plain(root: Path, pairs: int, batch_size: int) -> None:
    """Child process: plain TRL, no Ray; prints the trainer's done line and the wall time."""
    import torch

    started = time.monotonic()
    spec = make_spec(root, pairs, batch_size, workers=1, cpus_per_worker=os.cpu_count() or 1)
    torch.set_num_threads(os.cpu_count() or 1)
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.training.trainer import build_trainer, train

    lines: list[str] = []
    trainer = build_trainer(spec, spec.model.uri.removeprefix("file://"), str(root / "plain-out"),
                            ArtifactStore(str(root / "store-plain")), {}, progress=lines.append)
    train(trainer)
    print(json.dumps({"lines": lines, "wall": time.monotonic() - started}))


def ray_path(root: Path, pairs: int, batch_size: int, workers: int, cpus_per_worker: int) -> dict:
    from codealign.flows.train import fit_stage

    started = time.monotonic()
    spec = make_spec(root, pairs, batch_size, workers, cpus_per_worker)
    lines: list[str] = []
    fit_stage(spec, {}, lines.append)
    return {"lines": lines, "wall": time.monotonic() - started}


def summary(label: str, run: dict) -> dict:
    done = [DONE.search(line) for line in run["lines"]]
    done = [m for m in done if m]
    rate = sum(float(m.group(3)) for m in done if m.group(1) == "0")
    peaks = [int(m.group(4)) for m in sorted(done, key=lambda m: m.group(1))]
    return {"label": label, "rate": rate, "wall": run["wall"], "peaks": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--plain-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        plain(Path(args.plain_child), args.pairs, args.batch_size)
        return
    import ray

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="codealign-train-overhead-") as tmp:
        root = Path(tmp)
        make_spec(root, args.pairs, args.batch_size, 1, cores)  # the toy model and the data, outside the timings
        out = subprocess.run([sys.executable, __file__, "--plain-child", tmp, "--pairs", str(args.pairs),
                              "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
        runs = [summary("plain TRL (no Ray)", json.loads(out.stdout.strip().splitlines()[-1]))]
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
        try:
            runs.append(summary(f"Ray Train, 1 worker x {cores} CPUs",
                                ray_path(root, args.pairs, args.batch_size, 1, cores)))
            runs.append(summary(f"Ray Train, {cores} workers x 1 CPU",
                                ray_path(root, args.pairs, args.batch_size, cores, 1)))
        finally:
            ray.shutdown()
    base = runs[0]["rate"]
    print(f"\nDPO, toy-instruct, LoRA r=16, {args.pairs} pairs, batch {args.batch_size} per worker, one epoch, "
          f"{cores} cores\n")
    print(f"{'path':34} {'examples/s':>10} {'ratio':>6} {'wall s':>7}  peak RSS per worker (MiB)")
    for run in runs:
        print(f"{run['label']:34} {run['rate']:10.2f} {run['rate'] / base:6.2f} {run['wall']:7.1f}  "
              f"{', '.join(map(str, run['peaks']))}")
    print(f"\nRay Train (1 worker) / plain TRL throughput: {runs[1]['rate'] / base:.2f}")


if __name__ == "__main__":
    main()
