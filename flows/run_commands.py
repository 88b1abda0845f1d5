"""Commands over the runs in a store: list them (`runs`), resume one (`resume`), rebuild a
sweep's report (`report`), compare two runs (`compare`), trace what produced a result
(`lineage`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from codealign.flows.cli import StoreOpt, fail, out, run_flow_command
from codealign.tasks.artifacts import layout
from codealign.tasks.rendering import print_report


def report_command(
    run_id: Annotated[str, typer.Argument(help="an alignment-sweep run id")],
    store: StoreOpt = layout.DEFAULT_STORE,
) -> None:
    """Rebuild a sweep's report (Markdown + PNG in the store) and print its tables."""
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore, MissingArtifact
    from codealign.tasks.sweeps import report
    from codealign.tasks.sweeps.results import SWEEP_RECORD

    st = ArtifactStore(store)
    try:
        flow = read_manifest(st, run_id).flow
    except MissingArtifact:
        fail(f"no run {run_id!r} in {store}")
    if flow != "alignment-sweep":
        fail(f"run {run_id} is a {flow} run; reports are made for alignment-sweep runs")
    if not st.exists(layout.run_record(run_id, SWEEP_RECORD)):
        fail(f"run {run_id} has not finished yet: `codealign resume {run_id} --store {store}`")
    report.publish(st, run_id, {"flow": "cli", "task": "report"})
    print_report(out, store, run_id)


def compare_command(
    run_a: Annotated[str, typer.Argument(help="the run to compare against (last night's, the old setting)")],
    run_b: Annotated[str, typer.Argument(help="the run compared (tonight's, the new setting)")],
    store: StoreOpt = layout.DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="the comparison as JSON")] = False,
) -> None:
    """Compare two sweeps (or two evaluation runs) cell by cell: both pass@1 scores, Δ and its 95%
    paired-bootstrap interval over tasks, and whether Δ is beyond noise."""
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore, MissingArtifact
    from codealign.tasks.rendering import print_comparison
    from codealign.tasks.sweeps.compare import compare_runs

    st = ArtifactStore(store)
    for run_id in (run_a, run_b):
        try:
            read_manifest(st, run_id)
        except MissingArtifact:
            fail(f"no run {run_id!r} in {store}")
    try:
        rows = compare_runs(st, run_a, run_b)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps([r.to_json() for r in rows], indent=1))
    else:
        print_comparison(out, rows, run_a, run_b)


def resume_command(
    run_id: Annotated[str, typer.Argument(help="a run id from `codealign runs`")],
    store: StoreOpt = layout.DEFAULT_STORE,
    ray_address: Annotated[str | None, typer.Option(help="none: the run's setting")] = None,
) -> None:
    """Run what RUN_ID has not completed (units or shards), whichever flow it belongs to."""
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore, MissingArtifact

    try:
        read_manifest(ArtifactStore(store), run_id)
    except MissingArtifact:
        fail(f"no run {run_id!r} in {store}")
    run_flow_command(None, store, run_id, ray_address)


def runs_command(
    store: StoreOpt = layout.DEFAULT_STORE,
    flow: Annotated[str | None, typer.Option(help="only runs of this flow (alignment-sweep, train, ...)")] = None,
    since: Annotated[str | None, typer.Option(
        help="only runs started since: an ISO date/time (2026-12-01T02:00) or an age (36h, 7d)")] = None,
    status: Annotated[list[str] | None, typer.Option(
        "--status", help="only runs in this state (running, completed, failed, unknown); repeatable")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="the newest N runs (sub-runs under their sweep)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the runs as JSON")] = False,
) -> None:
    """List runs, newest first, each sweep's sub-runs under it: state, complete / failed items,
    start and last update."""
    from codealign.tasks.artifacts.runs import list_runs
    from codealign.tasks.artifacts.store import ArtifactStore

    try:
        started_since = since_time(since) if since else None
    except ValueError as exc:
        fail(f"--since {since!r}: {exc}")
    summaries = list_runs(ArtifactStore(store), flow=flow, states=set(status) if status else None,
                          since=started_since, limit=limit)
    if as_json:
        print(json.dumps([s.to_json() for s in summaries], indent=1))
        return
    table = Table()
    for col in ("run", "flow", "state", "complete", "failed", "started", "updated"):
        table.add_column(col)
    for r in summaries:
        for depth, s in [(0, r), *((1, c) for c in r.children)]:
            table.add_row(("  └ " if depth else "") + s.run_id, s.flow, s.state, f"{s.complete}/{s.items}",
                          str(len(s.failed)), s.started_at[:19], s.updated_at[:19])
    out.print(table)
    for r in summaries:
        for s in [r, *r.children]:
            for failure in s.failed:
                out.print(f"{s.run_id}: failed: {failure}", highlight=False, markup=False, soft_wrap=True)


def since_time(since: str) -> str:
    """``--since`` as an ISO UTC time: an age (``36h``, ``7d``, ``90m``) back from now, or an ISO
    date/time as given (compared with the runs' ISO start times)."""
    import datetime as dt
    import re

    if m := re.fullmatch(r"(\d+)([mhd])", since.strip()):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return (dt.datetime.now(dt.UTC) - dt.timedelta(**{unit: int(m[1])})).isoformat(timespec="seconds")
    parsed = dt.datetime.fromisoformat(since)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")


def show_command(
    run_id: Annotated[str, typer.Argument(help="a run id from `codealign runs`")],
    store: StoreOpt = layout.DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="the page as JSON")] = False,
) -> None:
    """One page about a run: flow, state, items, timings, pieces and critical path (sweeps),
    report, sub-runs, lineage roots, log file, config."""
    from codealign.flows.progress import log_path
    from codealign.tasks.artifacts.runs import describe
    from codealign.tasks.artifacts.store import ArtifactStore, MissingArtifact

    try:
        page = describe(ArtifactStore(store), run_id, str(log_path(store, run_id)))
    except MissingArtifact:
        fail(f"no run {run_id!r} in {store}")
    if as_json:
        print(json.dumps(page, indent=1))
        return
    def line(name: str, value: Any) -> None:
        out.print(f"{name:>14}: {value}", highlight=False, markup=False, soft_wrap=True)

    line("run", f"{page['run_id']} ({page['flow']})")
    line("state", f"{page['state']}, {page['complete']}/{page['items']} items complete")
    line("started", page["started_at"] or "-")
    line("updated", page["updated_at"] or "-")
    for failure in page["failed"]:
        line("failed", failure)
    if "pieces" in page:
        table = Table(title="pieces")
        for col in ("piece", "kind", "state", "seconds"):
            table.add_column(col)
        for p in page["pieces"]:
            table.add_row(p["label"], p.get("kind", ""), p.get("state", ""),
                          f"{p['ended_at'] - p['started_at']:.0f}" if p.get("ended_at") else "-")
        out.print(table)
        if cp := page["critical_path"]:
            line("critical path", f"{cp['seconds']:.0f} s of {cp['sum_seconds']:.0f} s: {' -> '.join(cp['pieces'])}")
        line("sub-runs", ", ".join(page["sub_runs"]) or "-")
    line("report", page["report"] or "-")
    for root in page["lineage_roots"]:
        line("lineage root", root["uri"])
    line("log", page["log"])
    out.print_json(json.dumps(page["config"]))


def lineage_command(
    target: Annotated[str, typer.Argument(help="a run id or an artifact URI")],
    store: StoreOpt = layout.DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable tree")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="check that every input it reaches is still there, "
                                         "unchanged (exit 1 if not)")] = False,
) -> None:
    """Print what produced a run's results (or any artifact), down to samples and checkpoints."""
    from codealign.tasks.artifacts.lineage import lineage_tree, render_tree
    from codealign.tasks.artifacts.lineage import verify as verify_lineage
    from codealign.tasks.artifacts.store import ArtifactStore

    st = ArtifactStore(store)
    key = target if "://" in target else layout.run_record(target, layout.RESULTS)
    try:
        found = st.exists(key)
    except ValueError as exc:  # a URI outside this store
        fail(f"{exc}; pass --store with the store that holds it")
    if not found:
        if "://" not in target and st.exists(layout.run_record(target, layout.MANIFEST)):
            fail(f"run {target} has no results yet (interrupted?): `codealign resume {target} --store {st.root}`")
        fail(f"{target}: no such run or artifact in {st.root}")
    uri = st.uri(key) if "://" not in key else key
    if verify:
        problems = verify_lineage(st, uri)
        for problem in problems:
            out.print(problem, highlight=False, markup=False, soft_wrap=True)
        out.print(f"{uri}: lineage {'verified' if not problems else f'has {len(problems)} problem(s)'}",
                  highlight=False, markup=False, soft_wrap=True)
        if problems:
            raise typer.Exit(1)
        return
    tree = lineage_tree(st, uri)
    if as_json:
        out.print_json(json.dumps(tree.to_json()))
    else:
        out.print(render_tree(tree), highlight=False, markup=False, soft_wrap=True)


def gc_command(
    store: StoreOpt = layout.DEFAULT_STORE,
    keep_last: Annotated[int | None, typer.Option(help="keep the newest N runs (a sweep counts with its sub-runs)")]
    = None,
    older_than: Annotated[float | None, typer.Option(help="delete runs started more than DAYS ago (and Prefect "
                                                     "results older than that)", metavar="DAYS")] = None,
    keep_run: Annotated[list[str] | None, typer.Option(help="a run to keep whatever the policy (repeatable)")] = None,
    delete_stale: Annotated[bool, typer.Option("--delete-stale", help="also delete runs that say running but "
                                               "hold no run lease (killed)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would go, with sizes; delete nothing")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="the plan as JSON")] = False,
) -> None:
    """Delete old runs and whatever no kept run needs: unreachable units, checkpoints no kept
    evaluation or later stage used (each stage's last stays), Ray Train state of finished
    stages, old Prefect results, expired leases.  Never a running run or what a live lease holds."""
    from codealign.tasks.artifacts import gc
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.rendering import print_gc_plan

    st = ArtifactStore(store, create=False)
    plan = gc.plan(st, keep_last, older_than, keep_run or [], delete_stale)
    if as_json:
        print(json.dumps(plan.to_json(), indent=1))
    else:
        print_gc_plan(out, plan, dry_run)
    if not dry_run:
        gc.apply(st, plan)
