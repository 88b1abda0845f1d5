"""Toy alignment, end to end, shaped like paper 003's table: does training move pass@1?

Why: the flows exist to make models better.  On the toy world (offline, CPU) this runs the
whole path for both pathways — PTA from toy-base (Flow mode: it completes code prompts) and
FTA from toy-instruct (Command mode: instructions through its chat template):

    generate-preferences (toy-train instructions, n responses, executed) -> sft / dpo / bon data
    train SFT from the starting model (with the degradation check), then DPO and BoNBoN from
    the SFT model (two Ray Train workers, LoRA r=16 merged into every checkpoint)
    evaluate-checkpoints: the starting model and each stage's final checkpoint on the held-out
    toy benchmark (300 toy tasks never in toy-train), greedy pass@1

and prints Base / SFT / DPO / BoNBoN x PTA / FTA with Delta-rel = (final - baseline) / baseline,
and each DPO / BoNBoN gain over the starting model in points with its 95% paired-bootstrap
interval over the held-out tasks (tasks/evaluation/intervals.py).
Target: DPO or BoNBoN >= +10 points over the starting model, its interval excluding 0, on at
least one pathway.

The settings are the toy sweep preset's (all 345 toy-train instructions; SFT 6 epochs at LoRA
lr 1e-3, DPO and BoNBoN 3 epochs at 2e-4), so the two measure the same thing two ways.

Run: ``python benchmarks/toy_alignment.py [--limit N] [--n 8] [--store out/toy-alignment]``
(about 15 minutes on 2 cores; a rerun reuses every stage, dataset and evaluation in the store).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

PATHWAYS = (("pta", "toy-base", "flow"), ("fta", "toy-instruct", "command"))
STAGES = ("base", "sft", "dpo", "bonbon")


def run_pathway(args: argparse.Namespace, pathway: str, model: str, mode: str) -> dict[str, dict]:
    from codealign.flows import registry
    from codealign.tasks.artifacts import layout, runs
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.evaluation.units import CheckpointEvalConfig
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.preferences.generate import GenerateConfig
    from codealign.tasks.training.config import StageConfig

    store = ArtifactStore(args.store)
    engine = {"max_model_len": 512}
    data_run = f"{pathway}-data"
    registry.run("generate-preferences", GenerateConfig(
        model=model, source="toy-train", mode=mode, kinds=["sft", "dpo", "bon"], limit=args.limit, store=store.root,
        sampling={"n": args.n, "temperature": 0.8, "top_p": 0.95, "max_tokens": 160}, engine=engine), data_run)

    def dataset(name: str) -> str:
        return store.uri(layout.run_dataset(data_run, f"{name}.parquet"))

    common = dict(pathway=pathway, store=store.root, workers=2, per_device_train_batch_size=4, warmup_steps=5,
                  save_steps=10_000, max_length=512, eval_max_tokens=160, lora_r=16, seed=args.seed)

    def stage(name: str, start: str, data: str, epochs: float, lr: float | None = None) -> str:
        registry.run("train", StageConfig(stage=name, model=start, dataset=dataset(data), num_train_epochs=epochs,
                                          learning_rate=lr, **common), f"{pathway}-{name}")
        [row] = runs.read_results(store, f"{pathway}-{name}")
        return row["final_checkpoint"]

    sft = stage("sft", model, "sft", args.sft_epochs, args.sft_lr)
    finals = {"base": resolve_model(model), "sft": sft, "dpo": stage("dpo", sft, "dpo", args.pref_epochs),
              "bonbon": stage("bonbon", sft, "bon", args.pref_epochs)}
    # The same settings as the SFT degradation check, so its units (base, SFT) are reused.
    registry.run("evaluate-checkpoints", CheckpointEvalConfig(
        checkpoints=list(finals.values()), benchmarks=["toy"], modes=[mode], store=store.root, ks=[1],
        sampling={"n": 1, "temperature": 0.0, "max_tokens": 160}), f"{pathway}-eval")
    rows = runs.read_results(store, f"{pathway}-eval")
    from codealign.tasks.artifacts.checkpoints import fingerprint
    from codealign.tasks.evaluation.intervals import unit_pass1

    by_sha = {r["checkpoint_sha256"]: r for r in rows}
    picked = {name: by_sha[fingerprint(uri).sha256] for name, uri in finals.items()}
    return {name: {"pass@1": r["pass@1"], "tasks": unit_pass1(store, r["unit"])} for name, r in picked.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N toy-train instructions (default: all 345)")
    parser.add_argument("--n", type=int, default=8, help="responses per instruction")
    parser.add_argument("--sft-epochs", type=float, default=6)
    parser.add_argument("--sft-lr", type=float, default=1e-3, help="SFT's LoRA learning rate (DPO/BoNBoN: 2e-4)")
    parser.add_argument("--pref-epochs", type=float, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default="out/toy-alignment/store")
    args = parser.parse_args()
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        scores = {pathway: run_pathway(args, pathway, model, mode) for pathway, model, mode in PATHWAYS}
    finally:
        ray.shutdown()

    from codealign.tasks.evaluation.intervals import paired_difference

    held_out = len(next(iter(scores.values()))["base"]["tasks"])
    print(f"\nheld-out toy pass@1 (greedy, {held_out} problems); {args.limit or 'all'} toy-train instructions "
          f"x {args.n} responses\n")
    print(f"{'pathway':8} " + " ".join(f"{s:>8}" for s in STAGES) + f" {'Δrel DPO':>9} {'Δrel BoNBoN':>12}")
    gains = []
    for pathway, s in scores.items():
        base = s["base"]["pass@1"]
        rel = {k: (s[k]["pass@1"] - base) / base if base else float("nan") for k in ("dpo", "bonbon")}
        print(f"{pathway.upper():8} " + " ".join(f"{100 * s[k]['pass@1']:8.1f}" for k in STAGES)
              + f" {100 * rel['dpo']:+8.1f}% {100 * rel['bonbon']:+11.1f}%")
        for k in ("dpo", "bonbon"):
            gains.append((f"{pathway.upper()} {k}", paired_difference(s["base"]["tasks"], s[k]["tasks"])))
    print("\ngain over the starting model, points [95% paired bootstrap interval over tasks]:")
    for name, d in gains:
        print(f"  {name:12} {d.points()}{'' if d.excludes_zero else '  (within noise)'}")
    name, best = max(gains, key=lambda g: g[1].estimate)
    verdict = "reached" if 100 * best.estimate >= 10 and best.excludes_zero else "not reached"
    print(f"\nbest DPO/BoNBoN gain: {name} {best.points()} (target: >= +10 points, interval excluding 0: {verdict})")

if __name__ == "__main__":
    main()
