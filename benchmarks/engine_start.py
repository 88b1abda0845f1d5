"""vLLM engine start time as codealign configures it, against vLLM's default compile caching.

Why: every checkpoint an evaluation samples costs one engine start, and on CPU that start is
mostly torch.compile.  vLLM's default (AOT compile cache, ``VLLM_USE_AOT_COMPILE=1`` with torch
>= 2.10) never loads back in this build ("Compiling model again due to a load failure ...
'function' object has no attribute 'finalize_loading'"), so every start compiles; codealign
turns it off (tasks/generation/sampling.get_engine), so vLLM's compile cache and Inductor's graph
cache are used.  Each start runs in a fresh process, as in a sampler actor:

* a checkpoint seen before (same path: vLLM's cache key includes the model path);
* a new checkpoint of the same architecture (a copy at a new path: what each training
  checkpoint is);
* ``enforce_eager`` (no compilation at all) for reference.

Run: ``python benchmarks/engine_start.py [--repeats 2]`` (needs the toy model).  Prints seconds
per start and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _start(model: str, eager: bool) -> None:
    """Child: start one engine, print its start time."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as in the sampler actors
    from codealign.tasks.generation.sampling import EngineSettings, get_engine

    start = time.perf_counter()
    get_engine(model, EngineSettings(max_model_len=512, enforce_eager=eager or None))
    print(f"START_S {time.perf_counter() - start:.2f}", flush=True)
    os._exit(0)


def time_start(model: str, aot: str | None, eager: bool = False) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if aot is not None:
        env["VLLM_USE_AOT_COMPILE"] = aot
    cmd = [sys.executable, __file__, "--child", model] + (["--eager"] if eager else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("START_S "):
            return float(line.split()[1])
    raise RuntimeError(f"engine did not start: {out.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _start(args.child, args.eager)

    from codealign.tasks.toy.models import build_toy_models

    base = str(build_toy_models()["toy-base"])
    work = Path(tempfile.mkdtemp(prefix="codealign-engine-"))
    rows: dict[str, list[float]] = {}
    try:
        for label, aot, eager in (("vLLM default (AOT cache)", "1", False), ("codealign (AOT off)", None, False),
                                  ("enforce_eager (no compile)", None, True)):
            time_start(base, aot, eager)  # warm: the seen-before case starts from a filled cache
            seen = [time_start(base, aot, eager) for _ in range(args.repeats)]
            new = []
            for _ in range(args.repeats):
                copy = work / f"checkpoint-{len(os.listdir(work))}"
                shutil.copytree(base, copy)
                new.append(time_start(str(copy), aot, eager))
            rows[label] = [statistics.median(seen), statistics.median(new)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nvLLM engine start, toy model, {os.cpu_count()} cores; median of {args.repeats} fresh processes each")
    print(f"{'':30s} {'seen checkpoint':>16s} {'new checkpoint':>15s}")
    for label, (seen, new) in rows.items():
        print(f"{label:30s} {seen:15.1f}s {new:14.1f}s")
    default, ours = rows["vLLM default (AOT cache)"], rows["codealign (AOT off)"]
    print(f"\ncodealign / vLLM default: seen {ours[0] / default[0]:.2f}, new checkpoint {ours[1] / default[1]:.2f}")


if __name__ == "__main__":
    main()
