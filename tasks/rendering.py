"""What the command line prints: pass@k, failure and fidelity tables, a run's results, a stage,
a preference dataset's gates, a sweep's report.  Plain functions writing to the rich ``Console``
they are given, so tests call them on a recording console without Typer."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from codealign.tasks.artifacts import layout


def print_scores(out: Console, scores: dict[str, Any], ks: list[int]) -> None:
    table = Table(title="pass@k")
    for col in ("benchmark", "tasks", "samples", *(f"pass@{k}" for k in ks)):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    rows = list(scores["benchmarks"].items())
    if len(rows) > 1:
        rows.append(("overall", scores["overall"]))
    for name, row in rows:
        table.add_row(name or "-", str(row["tasks"]), str(row["samples"]),
                      *(f"{100 * row[f'pass@{k}']:.1f}" if f"pass@{k}" in row else "-" for k in ks))
    out.print(table)
    print_failures(out, scores)
    print_fidelity(out, scores)
    print_efficiency(out, scores)


def print_efficiency(out: Console, scores: dict[str, Any]) -> None:
    """Efficiency (tasks/evaluation/efficiency.py, docs/metrics.md): canonical CPU / sample CPU
    of passing Python samples, mean per task, then over tasks; one line per benchmark."""
    overall = scores["overall"].get("efficiency")
    if not overall:
        return
    rows = [(name, row["efficiency"]) for name, row in scores["benchmarks"].items() if row.get("efficiency")]
    if len(rows) > 1:
        rows.append(("overall", overall))
    for name, summary in rows:
        mean = "-" if summary["mean"] is None else f"{summary['mean']:.3f}"
        out.print(f"efficiency {name or '-'}: {mean} (n_tasks={summary['n_tasks']})")
    out.print(overall["instructions"])


def print_failures(out: Console, scores: dict[str, Any]) -> None:
    """Failed samples by class (tasks/evaluation/taxonomy.py), one column per benchmark."""
    rows = {name: row.get("failures", {}) for name, row in scores["benchmarks"].items() if row.get("failures")}
    if not rows:
        return
    table = Table(title="failures")
    table.add_column("class")
    for name in rows:
        table.add_column(name or "-", justify="right")
    for cls in sorted({c for by_class in rows.values() for c in by_class}):
        table.add_row(cls, *(str(by_class.get(cls, 0)) for by_class in rows.values()))
    out.print(table)


def print_fidelity(out: Console, scores: dict[str, Any]) -> None:
    """Generation fidelity (tasks/evaluation/generation_fidelity.py, docs/metrics.md): each
    metric's mean over the n samples it applies to, one column per benchmark (and overall when
    there are several); shares as percentages."""
    from codealign.tasks.evaluation.generation_fidelity import METRICS, RATES

    columns = {name: row["fidelity"] for name, row in scores["benchmarks"].items() if row.get("fidelity")}
    if not columns:
        return
    if len(columns) > 1 and scores["overall"].get("fidelity"):
        columns["overall"] = scores["overall"]["fidelity"]
    table = Table(title="generation fidelity (mean, n samples)")
    table.add_column("metric")
    for name in columns:
        table.add_column(name or "-", justify="right")

    def cell(metric: str, means: dict[str, Any]) -> str:
        if metric not in means:
            return "-"
        mean, n = means[metric]["mean"], means[metric]["n"]
        return f"{100 * mean:.1f}% n={n}" if metric in RATES else f"{mean:.3f} n={n}"

    for metric in METRICS:
        if any(metric in means for means in columns.values()):
            table.add_row(metric, *(cell(metric, means) for means in columns.values()))
    out.print(table)


def print_results(out: Console, store_root: str, run_id: str) -> None:
    from codealign.tasks.artifacts.runs import read_results
    from codealign.tasks.artifacts.store import ArtifactStore

    rows = read_results(ArtifactStore(store_root), run_id)
    ks = sorted({key for r in rows for key in r if key.startswith("pass@")}, key=lambda x: int(x[5:]))
    table = Table(title=f"run {run_id}")
    for col in ("checkpoint", "benchmark", "mode", "tasks", "samples", *ks):
        table.add_column(col, justify="right" if col not in ("checkpoint", "benchmark", "mode") else "left")
    for r in rows:
        table.add_row(r["checkpoint"], r["benchmark"], r["mode"], str(r.get("tasks", "")), str(r.get("samples", "")),
                      *(f"{100 * r[k]:.1f}" if k in r else "-" for k in ks))
    out.print(table)


def print_report(out: Console, store_root: str, run_id: str) -> None:
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.sweeps import report

    st = ArtifactStore(store_root)
    built = report.build(st, run_id)
    for t in built.tables:
        if not t.rows:
            continue
        table = Table(title=t.title)
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in t.rows:
            table.add_row(*row)
        out.print(table)
    out.print(f"report: {st.uri(layout.run_record(run_id, 'report/report.md'))}", highlight=False, markup=False,
              soft_wrap=True)


def print_stage(out: Console, store_root: str, run_id: str) -> None:
    from codealign.tasks.artifacts.runs import read_results
    from codealign.tasks.artifacts.store import ArtifactStore

    for row in read_results(ArtifactStore(store_root), run_id):
        degraded = "" if row["degraded"] is None else f"; degraded: {row['degraded']}"
        if row.get("truncated_rows"):  # cut by max_length: their completions lost their ends
            degraded += f"; {row['truncated_rows']} rows cut at max_length"
        out.print(f"{row['stage']} ({row['pathway']}) stage {row['stage_key']}: {row['checkpoints']} checkpoints, "
                  f"{row['examples_seen']} examples, last loss {row['last_loss']}{degraded}\n"
                  f"final checkpoint: {row['final_checkpoint']}", highlight=False, markup=False, soft_wrap=True)


def print_preference_stats(out: Console, store_root: str, run_id: str) -> None:
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.preferences.report import table_rows

    store = ArtifactStore(store_root)
    stats = store.get_json(layout.run_dataset(run_id, "stats.json"))
    table = Table(title=f"run {run_id}: {stats['instructions']} instructions, {stats['responses']} responses")
    for col in ("dataset", "rows", "dropped instructions (why: count)"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for row in table_rows(stats):
        table.add_row(*row)
    out.print(table)
    gates = {**{f"instruction dropped: {k}": v for k, v in stats["instructions_dropped"].items()},
             **{f"response flagged: {k}": v for k, v in stats["responses_flagged"].items()}}
    for gate, count in gates.items():
        out.print(f"{gate}: {count}", highlight=False, markup=False)
    out.print(f"report: {store.uri(layout.run_dataset(run_id, 'report.md'))}", highlight=False, markup=False)


def print_forecast(out: Console, result: Any) -> None:
    """A sweep's plan (tasks/sweeps/forecast.py): one row per piece, the totals, the critical path."""
    def cell(value: Any) -> str:
        return "unknown" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    table = Table(title="sweep plan", show_lines=False)
    for column in ("piece", "needs", "generation requests", "(apart)", "executions", "examples × epochs",
                   "eval units", "in store", "est. s", "GPU-h"):
        table.add_column(column, justify="left" if column in ("piece", "needs", "in store") else "right")
    for p in result.pieces:
        training = f"{cell(p.examples)} × {p.epochs}" if p.kind == "stage" else "-"
        table.add_row(p.label, ", ".join(p.needs) or "-", cell(p.generation_requests),
                      cell(p.generation_requests_separate), cell(p.executions), training,
                      cell(p.evaluation_units) if p.kind == "eval" else "-", p.in_store, cell(p.seconds),
                      cell(p.gpu_hours))
    out.print(table)
    def total(name: str) -> str:
        known, unknown = result.total(name)
        if unknown == len(result.pieces):
            return "unknown"
        known_text = f"{known:,.0f}" if name != "gpu_hours" else f"{known:,.2f}"
        return known_text + (f" + unknown for {unknown} piece(s)" if unknown else "")

    out.print(f"generation requests: {total('generation_requests')} sampling each shared prompt once; "
              f"{total('generation_requests_separate')} sampling each benchmark apart", highlight=False)
    out.print(f"estimate: {total('seconds')} s of pieces, {total('gpu_hours')} GPU-hours"
              + ("" if result.rates else " (no earlier sweep in this store measured a throughput)"), highlight=False)
    seconds = "unknown" if result.critical_path_seconds is None else f"{result.critical_path_seconds:,} s"
    out.print(f"critical path ({seconds}): {' → '.join(result.critical_path)}", highlight=False)


def print_comparison(out: Console, rows: list[Any], run_a: str, run_b: str) -> None:
    """`codealign compare`: one line per cell, Δ with its 95% interval, beyond noise or not."""
    if not rows:
        out.print(f"{run_a} and {run_b} have no evaluated cells")
        return
    names = list(rows[0].cell)
    table = Table(title=f"pass@1: {run_b} against {run_a} (Δ = {run_b} − {run_a}, 95% paired bootstrap over tasks)")
    for col in [*names, run_a, run_b, "Δ [95% interval]", "beyond noise"]:
        table.add_column(col, justify="left" if col in names else "right")
    for r in rows:
        if r.delta is not None:
            d = r.delta
            change = f"{d.points()} ({d.tasks} tasks)"
            beyond = "yes" if d.excludes_zero else "no"
        else:
            change, beyond = r.note or "-", "-"
        table.add_row(*[str(r.cell[n]) if r.cell[n] is not None else "-" for n in names],
                      *[f"{100 * v:.1f}" if v is not None else "-" for v in (r.a, r.b)], change, beyond)
    out.print(table)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_gc_plan(out: Console, plan: Any, dry_run: bool) -> None:
    """`codealign gc`: what goes (or would go), grouped, with sizes; stale runs named."""
    verb = "would delete" if dry_run else "deleting"
    by_kind = plan.bytes_by_kind()
    table = Table(title=f"codealign gc: {verb}")
    for col in ("what", "key", "size", "of"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for d in plan.deletions:
        table.add_row(d.what, d.key, _size(d.bytes), d.owner if d.owner != d.key else "")
    if plan.deletions:
        out.print(table)
    for run_id in plan.stale_runs:
        verdict = "deleted" if run_id in plan.deleted_runs else "kept (--delete-stale deletes it)"
        out.print(f"stale: run {run_id} says running but holds no run lease (killed?): {verdict}", highlight=False)
    kinds = ", ".join(f"{kind} {_size(size)}" for kind, size in sorted(by_kind.items())) or "nothing"
    out.print(f"{verb} {len(plan.deleted_runs)} run(s) and {len(plan.deletions)} item(s): {kinds}; "
              f"total {_size(sum(by_kind.values()))}; keeping {len(plan.kept_runs)} run(s), "
              f"{_size(plan.kept_bytes)}", highlight=False)
