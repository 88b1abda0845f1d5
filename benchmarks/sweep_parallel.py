"""A toy sweep of two seeds, one piece at a time and with its branches in parallel, on a
two-node loopback Ray cluster.

Why: a sweep's data jobs, stages and evaluations are pieces of a graph (tasks/sweeps/schedule.py);
independent ones run at once up to ``max_parallel`` and what the cluster holds.  This measures
what that buys on the toy grid, and prints the critical path against the sum of the pieces.

On the same machine in one run: a Ray cluster of two nodes on 127.0.0.1 (``ray.cluster_utils``;
each node declares ``--node-cpus`` logical CPUs, which may be more than the machine's cores, so
two toy stages fit at once), and the same sweep in two fresh stores: ``max_parallel=1`` (serial)
and ``max_parallel=N`` (parallel).  The sweep: toy preset, FTA, SFT then DPO, seeds 0 and 1, 24
instructions x 4 responses, one Ray Train worker per stage, each stage's final checkpoint and
the starting model evaluated on the toy benchmark (Command mode).  Each run's wall time is the
flow's, from start to report; the pieces' times are those the sweep recorded.  Both runs start
with cold samplers (the first run's warm ones are killed); Inductor's compile cache is warm for
both.  On 2 cores, pieces that run at once share the cores, so each takes longer than alone:
the sum of the pieces grows while the wall time shrinks.

Run: ``python benchmarks/sweep_parallel.py [--parallel 4] [--node-cpus 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def settings(store: Path, address: str, max_parallel: int) -> dict:
    return {
        "pathways": ["fta"], "techniques": ["sft", "dpo"], "seeds": [0, 1], "max_parallel": max_parallel,
        "store": str(store), "ray_address": address,
        "data": {"source": "toy-train", "limit": 24, "shard_size": 8,
                 "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 160},
                 "engine": {"max_model_len": 512, "enforce_eager": True}},
        "training": {"workers": 1, "per_device_train_batch_size": 4, "num_train_epochs": 1, "warmup_steps": 0,
                     "save_steps": 10000, "max_length": 384, "degradation_limit": 12, "eval_max_tokens": 160},
        "stage_overrides": {},  # not the toy preset's longer SFT: every stage one epoch, as measured before
        "evaluation": {"benchmarks": ["toy"], "modes": ["command"], "checkpoints": "final", "limit": 24, "ks": [1],
                       "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 160}},
    }


def kill_warm_samplers() -> None:
    """Each run starts with cold samplers: on a cluster that outlives a run its samplers stay
    warm (named, detached), and the second run would start with the first run's engines."""
    import ray
    from ray.util import list_named_actors

    from codealign.flows.samplers import SAMPLER_NAMESPACE

    ray.init(address="auto", log_to_driver=False)
    try:
        for actor in list_named_actors(all_namespaces=True):
            if actor["namespace"] == SAMPLER_NAMESPACE:
                ray.kill(ray.get_actor(actor["name"], namespace=SAMPLER_NAMESPACE))
    finally:
        ray.shutdown()


def run_sweep(root: Path, address: str, max_parallel: int) -> dict:
    from codealign.flows import registry
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.sweeps.config import load_preset
    from codealign.tasks.sweeps.results import read_record

    store = root / f"store-p{max_parallel}"
    config = load_preset("toy", **settings(store, address, max_parallel))
    started = time.monotonic()
    registry.run("alignment-sweep", config, f"p{max_parallel}")
    wall = time.monotonic() - started
    record = read_record(ArtifactStore(str(store)), f"p{max_parallel}")
    pieces = record.pieces
    return {"wall": wall, "pieces": len(pieces), "sum": sum(p["ended_at"] - p["started_at"] for p in pieces),
            "span": max(p["ended_at"] for p in pieces) - min(p["started_at"] for p in pieces),
            "path": record.critical_path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="max_parallel of the parallel run")
    parser.add_argument("--node-cpus", type=int, default=2, help="logical CPUs each of the two nodes declares")
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    from ray.cluster_utils import Cluster

    from codealign.tasks.generation.models import resolve_model

    resolve_model("toy-base"), resolve_model("toy-instruct")  # built outside the timings
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.node_cpus, "include_dashboard": False})
    cluster.add_node(num_cpus=args.node_cpus)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # for kill_warm_samplers' "auto"
    try:
        with tempfile.TemporaryDirectory(prefix="codealign-sweep-parallel-") as tmp:
            serial = run_sweep(Path(tmp), cluster.address, 1)
            kill_warm_samplers()
            parallel = run_sweep(Path(tmp), cluster.address, args.parallel)
    finally:
        cluster.shutdown()
    print(f"\ntoy sweep, FTA, SFT -> DPO, seeds 0 and 1 ({serial['pieces']} pieces), two loopback nodes x "
          f"{args.node_cpus} logical CPUs, {os.cpu_count()} cores\n")
    print(f"{'run':24} {'wall s':>7} {'sum of pieces s':>16} {'critical path s':>16}")
    for label, run in (("serial (max_parallel=1)", serial), (f"parallel (max_parallel={args.parallel})", parallel)):
        print(f"{label:24} {run['wall']:7.0f} {run['sum']:16.0f} {run['path']['seconds']:16.0f}")
    print(f"\nparallel / serial wall time: {parallel['wall'] / serial['wall']:.2f}")
    print(f"critical path (parallel run): {' -> '.join(parallel['path']['pieces'])}")


if __name__ == "__main__":
    main()
