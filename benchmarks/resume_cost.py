"""Resume cost and orchestration overhead of the evaluate-checkpoints flow.

Why: the point of units keyed by checkpoint content is that a failure costs only the failed
units.  This evaluates N checkpoints (copies of the toy model that differ in one small file) three
ways on the same machine in one run:

1. the flow, clean, over all N checkpoints (Prefect + local Ray);
2. the flow with one checkpoint corrupt (its units fail), then the checkpoint is fixed and the
   run resumed: the resume's work as a fraction of the full run (units and wall time); the
   complete run is also rerun, which samples nothing: the start-up every run pays;
3. the same units through the plain stage functions in this process (no Prefect, no Ray), to
   price the orchestration per unit.

Run: ``python benchmarks/resume_cost.py [--checkpoints 4] [--limit N] [--n 10]
[--persistent-cluster]`` (needs the toy model: built on first use, ~2 min).  Prints the figures
and the target (<= 1/N + 10%).  By default each flow run starts (and stops) a local Ray, as a CLI
run without ``--ray-address`` does; ``--persistent-cluster`` starts one Ray head on loopback for
all the runs, as a shared cluster is: the runs then reuse warm vLLM samplers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# a local Ray on the loopback address (Ray otherwise takes the machine's routable one)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def make_checkpoints(root: Path, base: Path, count: int) -> list[Path]:
    paths = []
    for step in range(1, count + 1):
        target = root / f"checkpoint-{step}"
        shutil.copytree(base, target)
        (target / "step.txt").write_text(str(step))
        paths.append(target)
    return paths


def units_run(store_root: str, since: float) -> int:
    """Units whose samples were written after ``since`` (i.e. by the run being measured)."""
    from codealign.tasks.artifacts.store import ArtifactStore

    store = ArtifactStore(store_root)
    return sum(1 for key in store.list("units") if key.endswith("scores.json")
               and store.fs.modified(store.path(key)).timestamp() >= since)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="problems per unit (default: all 60 toy tasks)")
    parser.add_argument("--n", type=int, default=10, help="samples per problem (the toy calibration setting)")
    parser.add_argument("--persistent-cluster", action="store_true",
                        help="run the flows on one Ray cluster started for all of them")
    args = parser.parse_args(argv)
    head = start_head() if args.persistent_cluster else None
    try:
        measure(args, head[1] if head else None)
    finally:
        if head:
            head[0].terminate()
            head[0].wait(60)


def start_head() -> tuple[subprocess.Popen, str]:
    """A Ray head node on 127.0.0.2 (a loopback address Ray keeps as it is), waited for."""
    import socket

    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                             "--node-ip-address=127.0.0.2", f"--port={port}", f"--num-cpus={os.cpu_count()}",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.2:{port}"
    deadline = time.monotonic() + 120
    while True:  # wait until a driver can connect
        try:
            ray.init(address=address, log_to_driver=False)
            ray.shutdown()
            return proc, address
        except Exception:  # noqa: BLE001 - still starting
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the Ray head did not start") from None
            time.sleep(1)


def measure(args: argparse.Namespace, ray_address: str | None) -> None:

    from prefect.testing.utilities import (
        prefect_test_harness,  # after flows/: its Prefect settings apply
    )

    from codealign.flows import registry
    from codealign.flows.runtime import RunFailed
    from codealign.tasks.artifacts.checkpoints import fingerprint
    from codealign.tasks.evaluation import units as ce
    from codealign.tasks.generation.sampling import release_engines
    from codealign.tasks.toy.models import build_toy_models

    base = build_toy_models()["toy-base"]
    work = Path(tempfile.mkdtemp(prefix="codealign-resume-"))
    ckpts = make_checkpoints(work / "train", base, args.checkpoints)
    settings = dict(benchmarks=["toy"], modes=["flow"], sampling={"n": args.n, "temperature": 0.8, "max_tokens": 128},
                    engine={"max_model_len": 512}, ks=[1], limit=args.limit, workers=1, ray_address=ray_address)

    with prefect_test_harness(server_startup_timeout=180):
        # 1. clean full run
        full_cfg = ce.CheckpointEvalConfig(checkpoints=[str(work / "train")], store=str(work / "full"), **settings)
        start = time.time()
        registry.run("evaluate-checkpoints", full_cfg, "full")
        full_s, full_units = time.time() - start, units_run(full_cfg.store, start)
        # the same run again: nothing to sample, so this is the start-up every run pays before
        # its first engine (Ray start, flow run, fingerprints, manifest and results)
        start = time.time()
        registry.resume(full_cfg.store, "full", ray_address)
        fixed_s, fixed_units = time.time() - start, units_run(full_cfg.store, start)

        # 2. one corrupt checkpoint, then fix and resume
        weights = ckpts[-2] / "model.safetensors"
        good = weights.read_bytes()
        weights.write_bytes(good[: len(good) // 3])
        failing_cfg = full_cfg.model_copy(update={"store": str(work / "resume")})
        try:
            registry.run("evaluate-checkpoints", failing_cfg, "failing")
        except RunFailed as exc:
            print(f"first run failed as intended: {str(exc)[:160]}...")
        weights.write_bytes(good)
        start = time.time()
        registry.resume(failing_cfg.store, "failing", ray_address)
        resume_s, resume_units = time.time() - start, units_run(failing_cfg.store, start)

    # 3. the same units, stage functions called directly (no Prefect, no Ray), with the engine
    # set up as the sampler actors set it up (engine core in-process)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    direct_cfg = full_cfg.model_copy(update={"store": str(work / "direct")})
    start = time.time()
    units = ce.make_units(direct_cfg, [fingerprint(str(c)) for c in ckpts])
    for unit in units:
        samples = ce.sample_unit(unit, direct_cfg, {})
        verdicts = ce.execute_unit(unit, direct_cfg, samples, {})
        ce.score_unit(unit, direct_cfg, verdicts, {})
    direct_s = time.time() - start
    release_engines()

    n = args.checkpoints
    where = f"one persistent Ray cluster ({ray_address})" if ray_address else "a local Ray per run"
    print(f"\n{n} checkpoints x 1 unit ({args.limit or 'all'} toy problems x n={args.n}); "
          f"{os.cpu_count()} cores; {where}")
    print(f"full run (flow)        : {full_units} units, {full_s:6.1f} s")
    print(f"resume after 1 failure : {resume_units} units, {resume_s:6.1f} s")
    print(f"resume / full          : units {resume_units / full_units:.3f}, wall time {resume_s / full_s:.3f} "
          f"(target <= 1/N + 10% = {1 / n + 0.10:.3f})")
    print(f"rerun of a complete run: {fixed_units} units, {fixed_s:6.1f} s (start-up before any engine)")
    print(f"direct stage calls     : {len(units)} units, {direct_s:6.1f} s")
    print(f"orchestration overhead : {(full_s - direct_s) / len(units):+.1f} s per unit "
          f"(flow {full_s / len(units):.1f} s/unit vs direct {direct_s / len(units):.1f} s/unit; "
          f"ratio {full_s / direct_s:.2f})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
