"""`codealign runs` on a store with thousands of run records: listing against probing.

Why: a nightly paper-003 sweep adds ~140 runs (the sweep and its sub-runs), so a store holds
thousands within weeks.  `list_runs` lists the store twice (``runs/`` and ``units/``) and looks
each item up in those listings; the reference is what it did before, one existence check per
item of every run (`summarize` without the listings).  Both read each run's manifest and status.

On the same machine in one run: a generated local store of ``--runs`` evaluation runs of
``--items`` items each (three quarters of the items complete), listed both ways.

Run: ``python benchmarks/runs_listing.py [--runs 5000] [--items 4]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def generate(root: str, count: int, items: int) -> None:
    from codealign.tasks.artifacts import layout, runs
    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.artifacts.store import ArtifactStore

    store, meta = ArtifactStore(root), ArtifactMeta("scores", {"task": "benchmark"})
    for n in range(count):
        run_id = f"run-{n:05d}"
        keys = [layout.unit_artifact(f"u{n:05d}-{i}", "scores.json") for i in range(items)]
        runs.write_manifest(store, runs.Manifest(run_id, "evaluate-checkpoints", {"n": n},
                                                 [runs.RunItem(f"u{n:05d}-{i}", f"unit {i}", k)
                                                  for i, k in enumerate(keys)]), (), {})
        for key in keys[: items * 3 // 4]:
            store.put_json(key, {"overall": {}}, meta)
        runs.write_status(store, runs.RunStatus(run_id, "completed", started_at=f"2026-11-{1 + n % 28:02d}T02:00:00"),
                          {})


def probing(root: str) -> int:
    """The reference: every run summarized with one existence check per item."""
    from codealign.tasks.artifacts import layout, runs
    from codealign.tasks.artifacts.store import ArtifactStore

    store = ArtifactStore(root)
    ids = sorted(filter(None, map(layout.run_id_of, store.list(layout.RUNS))))
    return len([runs.summarize(store, run_id) for run_id in ids])


def listing(root: str) -> int:
    from codealign.tasks.artifacts import runs
    from codealign.tasks.artifacts.store import ArtifactStore

    return len(runs.list_runs(ArtifactStore(root)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--items", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codealign-runs-listing-") as tmp:
        started = time.perf_counter()
        generate(tmp, args.runs, args.items)
        print(f"generated {args.runs} runs x {args.items} items in {time.perf_counter() - started:.0f} s")
        timings = {}
        for name, how in (("probing each item (reference)", probing), ("list_runs (two listings)", listing)):
            started = time.perf_counter()
            found = how(tmp)
            timings[name] = time.perf_counter() - started
            assert found == args.runs, (name, found)
    print(f"\n{'way':32} {'seconds':>8}")
    for name, seconds in timings.items():
        print(f"{name:32} {seconds:8.2f}")
    reference, ours = timings.values()
    print(f"\nlist_runs / reference: {ours / reference:.2f}")


if __name__ == "__main__":
    main()
