"""`codealign runs` on a store with thousands of run records: listing against probing.

Why: a nightly paper-003 sweep adds ~140 runs (the sweep and its sub-runs), so a store holds
thousands within weeks.  `list_runs` lists the store twice (``runs/`` and ``units/``) and looks
each item up in those listings; the reference is what it did before, one existence check per
item of every run (`summarize` without the listings).  Both read each run's manifest and status.

On the same machine in one run: a generated store of ``--runs`` evaluation runs of ``--items``
items each (three quarters of the items complete), listed both ways; a local directory, or with
``--s3`` a bucket on an S3-compatible server (moto) started here on loopback, where every probe
is an HTTP request.

Run: ``python benchmarks/runs_listing.py [--runs 5000] [--items 4] [--s3]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
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


@contextmanager
def s3_root(tmp: str):
    """A bucket on a moto server on loopback, the AWS variables pointing at it."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"}).mkdir("bench")
        yield "s3://bench/store"
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--s3", action="store_true", help="an S3 bucket (moto on loopback) instead of a directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codealign-runs-listing-") as tmp_dir, \
            (s3_root(tmp_dir) if args.s3 else nullcontext(tmp_dir)) as tmp:
        started = time.perf_counter()
        generate(tmp, args.runs, args.items)
        print(f"generated {args.runs} runs x {args.items} items in {time.perf_counter() - started:.0f} s")
        timings = {}
        for name, how in (("probing each item (reference)", probing), ("list_runs (two listings)", listing)):
            started = time.perf_counter()
            found = how(tmp)
            timings[name] = time.perf_counter() - started
            assert found == args.runs, (name, found)
    print(f"\n{'s3 (moto on loopback)' if args.s3 else 'local directory'}, {args.runs} runs x {args.items} items")
    print(f"{'way':32} {'seconds':>8}")
    for name, seconds in timings.items():
        print(f"{name:32} {seconds:8.2f}")
    reference, ours = timings.values()
    print(f"\nlist_runs / reference: {ours / reference:.2f}")


if __name__ == "__main__":
    main()
