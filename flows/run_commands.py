"""Commands over the runs in a store: list them (`runs`), resume one (`resume`), rebuild a
sweep's report (`report`), compare two runs (`compare`), trace what produced a result
(`lineage`)."""

from __future__ import annotations

import json
from typing import Annotated

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


def runs_command(store: StoreOpt = layout.DEFAULT_STORE) -> None:
    """List runs (of every flow) with their state and complete / failed items."""
    from codealign.tasks.artifacts.runs import list_runs
    from codealign.tasks.artifacts.store import ArtifactStore

    table = Table()
    for col in ("run", "flow", "state", "complete", "failed", "updated"):
        table.add_column(col)
    summaries = list_runs(ArtifactStore(store))
    for r in summaries:
        table.add_row(r.run_id, r.flow, r.state, f"{r.complete}/{r.items}", str(len(r.failed)), r.updated_at)
    out.print(table)
    for r in summaries:
        for failure in r.failed:
            out.print(f"{r.run_id}: failed: {failure}", highlight=False, markup=False, soft_wrap=True)


def lineage_command(
    target: Annotated[str, typer.Argument(help="a run id or an artifact URI")],
    store: StoreOpt = layout.DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable tree")] = False,
) -> None:
    """Print what produced a run's results (or any artifact), down to samples and checkpoints."""
    from codealign.tasks.artifacts.lineage import lineage_tree, render_tree
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
    tree = lineage_tree(st, st.uri(key) if "://" not in key else key)
    if as_json:
        out.print_json(json.dumps(tree.to_json()))
    else:
        out.print(render_tree(tree), highlight=False, markup=False, soft_wrap=True)
