"""Execution throughput of generate-preferences inside the flow vs the bare sandbox, and the
yield of preference pairs.

Why: the flow wraps the sandbox in Prefect tasks on Ray and adds static analysis (ruff, radon,
reward-hack and degenerate checks) per response; that wrapping should cost little (target: the
flow executes >= 0.8x the bare sandbox's responses/s).  And a preference set is only as good as
its yield: the share of instructions that give a DPO pair (a passing *and* a failing response)
and a BoNBoN pair.

On the same machine in one run:

1. the flow (Prefect test server + local Ray) over ``--limit`` toy-train instructions with
   toy-instruct, n responses each: executed responses/s = responses / the wall time of the
   ``judge-shard`` Prefect task runs (the union of their start-to-end spans: Ray scheduling, artifact
   reads and writes, execution and analysis) — once in the full run, where a shard executes
   while the next one samples on the same cores, and once in a resume that only re-judges
   (every shard's responses dropped, its samples kept);
2. the bare sandbox on exactly those responses (``execute_tested``, same workers), and the bare
   judge stage (sandbox + static analysis) without Prefect or Ray.

Run: ``python benchmarks/generation_throughput.py [--limit 120] [--n 10] [--shard-size 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


async def judge_task_seconds(flow_run_ids: list[str]) -> float:
    """Wall time during which judge-shard tasks ran: the union of their [start, end]
    intervals (tasks of different shards overlap; summing them would count cores, not time)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="judge-shard")))
    spans = sorted((t.start_time.timestamp(), t.end_time.timestamp()) for t in task_runs if t.start_time and t.end_time)
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=120, help="toy-train instructions")
    parser.add_argument("--n", type=int, default=10, help="responses per instruction")
    parser.add_argument("--shard-size", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers (default: cores)")
    args = parser.parse_args(argv)

    from prefect.testing.utilities import (
        prefect_test_harness,  # after flows/: its Prefect settings apply
    )

    from codealign.flows import registry
    from codealign.tasks.artifacts import runs
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.preferences.generate import GenerateConfig, run_inputs
    from codealign.tasks.preferences.responses import (
        Response,
        judge_responses,
        tested_program,
    )
    from codealign.tasks.sandbox.tested import execute_tested

    work = Path(tempfile.mkdtemp(prefix="codealign-genbench-"))
    config = GenerateConfig(model="toy-instruct", source="toy-train", limit=args.limit, shard_size=args.shard_size,
                            sampling={"n": args.n, "temperature": 0.7, "top_p": 0.95, "max_tokens": 160},
                            engine={"max_model_len": 512}, store=str(work / "store"), workers=args.workers)
    with prefect_test_harness(server_startup_timeout=180):
        start = time.time()
        registry.run("generate-preferences", config, "bench")
        flow_s = time.time() - start
        store = ArtifactStore(config.store)
        first = runs.read_status(store, "bench").flow_run_ids
        judge_s = asyncio.run(judge_task_seconds(first))
        # 1b. the judge stage alone inside the flow: drop every shard's responses and resume
        # (samples are kept, so nothing is sampled and nothing competes for the cores)
        shards = run_inputs(store, "bench").shards
        for shard in shards:
            store.fs.rm(store.path(shard.artifact("responses.jsonl")))
            store.fs.rm(store.path(shard.artifact("responses.jsonl")) + ".meta.json")
        start = time.time()
        registry.resume(config.store, "bench")
        rerun_s = time.time() - start
        rerun_ids = [i for i in runs.read_status(store, "bench").flow_run_ids if i not in first]
        judge_alone_s = asyncio.run(judge_task_seconds(rerun_ids))
        # the judge stage's own time inside those tasks (recorded with each artifact)
        inside_s = sum(store.meta(s.artifact("responses.jsonl")).params["seconds"] for s in shards)

    rows = [r for s in shards for r in store.get_jsonl(s.artifact("responses.jsonl"))]
    responses = [Response.from_json(r) for r in rows]
    programs = [tested_program(r) for r in responses]
    start = time.time()
    verdicts = execute_tested(programs, config.limits, config.workers, config.test_cpu_s)
    bare_s = time.time() - start
    assert [v.status for v in verdicts] == [r.status for r in responses], "the bare sandbox disagrees with the flow"
    fresh = [Response.from_json({**r, "status": "", "tests_passed": 0, "tests_total": 0}) for r in rows]
    start = time.time()
    judge_responses(fresh, config.limits, config.workers, config.test_cpu_s)
    bare_judge_s = time.time() - start

    stats = store.get_json("runs/bench/datasets/stats.json")
    kept = len(stats["pass_rates"])
    n = len(responses)
    piped_rate, alone_rate = n / judge_s, n / judge_alone_s
    bare_rate, judge_rate = n / bare_s, n / bare_judge_s
    print(f"\n{args.limit} toy-train instructions x n={args.n} = {n} responses, {len(shards)} shards; "
          f"{os.cpu_count()} cores; flow wall time {flow_s:.1f} s, judge-only resume {rerun_s:.1f} s")
    print(f"flow, judge-shard task runs alone ({judge_alone_s:.1f} s):      {alone_rate:8.1f} responses/s")
    print(f"  judge_responses inside the tasks, summed over shards: {inside_s:.1f} s")
    print(f"flow, judge-shard while sampling runs ({judge_s:.1f} s): {piped_rate:8.1f} responses/s")
    print(f"bare judge stage (sandbox + analysis, {bare_judge_s:.1f} s):     {judge_rate:8.1f} responses/s")
    print(f"bare sandbox (execute_tested, {bare_s:.1f} s):                   {bare_rate:8.1f} responses/s")
    print(f"flow (judge alone) / bare sandbox: {alone_rate / bare_rate:.2f}   (target >= 0.8)")
    print(f"flow (judge alone) / bare judge stage: {alone_rate / judge_rate:.2f}")
    print(f"flow (pipelined with sampling on the same cores) / bare sandbox: {piped_rate / bare_rate:.2f}")
    print(f"pass rate over responses: {sum(r.passed for r in responses) / n:.3f}")
    for name in ("dpo", "bon"):
        rows_n = stats["datasets"][name]["rows"]
        print(f"yield {name}: {rows_n}/{kept} kept instructions = {rows_n / kept:.3f}  "
              f"(dropped: {stats['datasets'][name]['dropped']})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
