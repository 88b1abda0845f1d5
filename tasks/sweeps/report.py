"""A sweep's report, shaped like the papers' tables: Markdown + PNG in the store.

* **alignment** (paper 003, Table 3): Base / SFT / DPO / BoNBoN × benchmark × PTA / FTA, final
  checkpoints, with Δrel = (final − baseline) / baseline for DPO and BoNBoN; one table per
  model pair (and objective, seed, LoRA rank where the grid has several) and mode;
* **instruction-tuning tax** (paper 001): Flow vs Command pass@1 for the base, instruct and
  aligned models;
* **ICL vs LoRA** (paper 002): in-context shots against LoRA ranks, pass@1 and pass@10;
* **early stop**: each SFT stage's degradation check and the stages skipped, with why;
* **preference data**: rows per dataset and drops of every data run;
* **metric vs checkpoint step** (PNG): per benchmark and mode, each stage's checkpoints along
  its pathway (DPO/BoNBoN continue from the SFT model's last step).

Every number comes from the sweep's ``results.json`` (which joins the evaluation runs' results
with the sweep record), so the report can be rebuilt from the store at any time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.evaluation.intervals import paired_difference, unit_pass1
from codealign.tasks.plots import png_bytes, pyplot
from codealign.tasks.sweeps.results import SweepRecord, read_record
from codealign.tasks.training import tracking

TECHNIQUES = (("base", "Base"), ("sft", "SFT"), ("dpo", "DPO"), ("bonbon", "BoNBoN"))
REPORT_DIR = "report"
REGRESSION = "regression"  # the key of a regression's message among a sweep status' failures


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "| " + " | ".join(["---"] + ["---:"] * (len(self.columns) - 1)) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


@dataclass
class Report:
    run_id: str
    tables: list[Table]
    png: bytes | None
    markdown: str


@dataclass
class Published:
    report: Report
    markdown_uri: str
    png_uri: str | None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rel(final: float | None, base: float | None) -> str:
    if final is None or base is None:
        return "-"
    return "n/a" if base == 0 else f"{100 * (final - base) / base:+.1f}%"


def _first_k(rows: Iterable[dict[str, Any]]) -> str:
    ks = sorted({int(k.removeprefix("pass@")) for r in rows for k in r if k.startswith("pass@")})
    return f"pass@{ks[0]}" if ks else "pass@1"


def _score(rows: list[dict[str, Any]], metric: str, **match: Any) -> float | None:
    found = [r[metric] for r in rows if r.get(metric) is not None and all(r.get(k) == v for k, v in match.items())]
    return sum(found) / len(found) if found else None


def _units(rows: list[dict[str, Any]], **match: Any) -> list[str]:
    return [r["unit"] for r in rows if r.get("unit") and all(r.get(k) == v for k, v in match.items())]


def _delta(rel: str, base_units: list[str], final_units: list[str],
           per_task: Callable[[str], dict[str, float] | None] | None) -> str:
    """Δrel with the absolute Δ in points and its 95% paired interval over tasks, where both
    cells are one unit each whose verdicts are at hand."""
    if rel in ("-", "n/a") or per_task is None or len(base_units) != 1 or len(final_units) != 1:
        return rel
    base, final = per_task(base_units[0]), per_task(final_units[0])
    if not base or not final or not set(base) & set(final):
        return rel
    d = paired_difference(base, final)
    return f"{rel} ({d.points()}, {d.tasks} tasks{'' if d.excludes_zero else ', within noise'})"


def alignment_tables(rows: list[dict[str, Any]], record: SweepRecord,
                     per_task: Callable[[str], dict[str, float] | None] | None = None) -> list[Table]:
    """Paper 003's table per model pair × branch settings × mode (final checkpoints, shots 0).
    With ``per_task`` (a unit's per-task pass@1), each Δrel also gives the absolute Δ in points
    and its 95% paired bootstrap interval over tasks (tasks/evaluation/intervals.py)."""
    final = [r for r in rows if r["final"] and r["shots"] == 0]
    metric = _first_k(final)
    trained = [r for r in final if r["technique"] != "base"]
    branches = sorted({(r["pair"], r["objective"], r["seed"], r["lora_r"]) for r in trained
                       if r["technique"] != "sft"} or {(r["pair"], "functional", r["seed"], r["lora_r"])
                                                        for r in trained})
    several = len({b[1:] for b in branches}) > 1
    skipped = {s.label: s.reason for s in record.skipped}
    tables = []
    for pair, objective, seed, rank in branches:
        pathways = sorted({r["pathway"] for r in final if r["pair"] == pair}, key=["pta", "fta"].index)
        for mode in sorted({r["mode"] for r in final}):
            benchmarks = sorted({r["benchmark"] for r in final if r["mode"] == mode})
            columns = ["stage"] + [f"{b} {p.upper()}" for b in benchmarks for p in pathways]
            title = f"{pair}: {objective}" + (f" (seed {seed}, LoRA r{rank})" if several else "") + \
                f" — {mode} mode, {metric} (paper 003, Table 3)"
            table = Table(f"alignment-{pair}-{objective}-s{seed}-r{rank}-{mode}", title, columns)
            values: dict[str, list[float | None]] = {}
            units: dict[str, list[list[str]]] = {}
            for technique, label in TECHNIQUES:
                cells: list[float | None] = []
                units[technique] = []
                for b in benchmarks:
                    for p in pathways:
                        match: dict[str, Any] = {"pair": pair, "pathway": p, "technique": technique,
                                                 "benchmark": b, "mode": mode}
                        if technique != "base":
                            match.update(seed=seed, lora_r=rank)
                        if technique in ("dpo", "bonbon"):
                            match["objective"] = objective
                        cells.append(_score(final, metric, **match))
                        units[technique].append(_units(final, **match) if metric == "pass@1" else [])
                values[technique] = cells
                if any(c is not None for c in cells) or technique != "base":
                    shown = [_fmt(c) if c is not None else _why(skipped, pair, p, seed, rank, objective, technique)
                             for c, p in zip(cells, [p for _ in benchmarks for p in pathways])]
                    table.rows.append([label, *shown])
            for technique, label in (("dpo", "DPO"), ("bonbon", "BoNBoN")):
                table.rows.append([f"Δrel {label}", *(_delta(_rel(f, b), bu, fu, per_task) for f, b, fu, bu in zip(
                    values[technique], values["base"], units[technique], units["base"]))])
            tables.append(table)
    return tables


def _why(skipped: dict[str, str], pair: str, pathway: str, seed: Any, rank: Any, objective: str, technique: str) -> str:
    branch = f"{pair}-{pathway}-s{seed}-r{rank}"
    label = f"{branch}-sft" if technique == "sft" else f"{branch}-{objective}-{technique}"
    return "skipped" if label in skipped else "-"


def tax_table(rows: list[dict[str, Any]]) -> Table | None:
    """Paper 001: every model's Flow vs Command pass@1 (the instruction-tuning tax)."""
    final = [r for r in rows if r["final"] and r["shots"] == 0]
    if {r["mode"] for r in final} != {"command", "flow"}:
        return None
    metric = _first_k(final)
    benchmarks = sorted({r["benchmark"] for r in final})
    table = Table("instruction-tuning-tax", f"Flow vs Command mode, {metric} (paper 001's instruction-tuning tax)",
                  ["model"] + [f"{b} {m}" for b in benchmarks for m in ("Flow", "Command", "Command − Flow")])
    for name, match in _final_models(final):
        cells = []
        for b in benchmarks:
            flow_s = _score(final, metric, benchmark=b, mode="flow", **match)
            command = _score(final, metric, benchmark=b, mode="command", **match)
            cells += [_fmt(flow_s), _fmt(command),
                      "-" if flow_s is None or command is None else f"{command - flow_s:+.3f}"]
        table.rows.append([name, *cells])
    return table


def _final_models(final: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each model of the sweep's final rows, in report order: its display name and the row
    fields that select it."""
    models = sorted({(r["pair"], r["pathway"], r["technique"], r["objective"] or "", r["seed"] or 0, r["lora_r"] or 0)
                     for r in final}, key=lambda m: (m[0], ["pta", "fta"].index(m[1]),
                                                     [t for t, _ in TECHNIQUES].index(m[2]), m[3], m[4], m[5]))
    named = []
    for pair, pathway, technique, objective, seed, rank in models:
        name = f"{pair} {'base' if pathway == 'pta' else 'instruct'}" if technique == "base" else \
            f"{pair} {pathway.upper()} {technique}" + (f" ({objective})" if technique in ("dpo", "bonbon") else "")
        match = {"pair": pair, "pathway": pathway, "technique": technique}
        if technique != "base":
            match.update(seed=seed, lora_r=rank)
        if technique in ("dpo", "bonbon"):
            match["objective"] = objective
        named.append((name, match))
    return named


def failures_table(rows: list[dict[str, Any]]) -> Table | None:
    """Why the final models' samples failed, per model and mode (the failure taxonomy, summed
    over benchmarks): paper 001 breaks the instruction-tuning tax down this way."""
    final = [r for r in rows if r["final"] and r["shots"] == 0 and r.get("failures")]
    if not final:
        return None
    totals: dict[str, int] = {}
    for r in final:
        for cls, n in r["failures"].items():
            totals[cls] = totals.get(cls, 0) + n
    classes = sorted(totals, key=lambda c: (-totals[c], c))
    table = Table("failure-classes", "failed samples by class, final models (summed over benchmarks)",
                  ["model", "mode", "failed", *classes])
    for name, match in _final_models(final):
        for mode in ("flow", "command"):
            selected = [r for r in final if r["mode"] == mode and all(r.get(k) == v for k, v in match.items())]
            if not selected:
                continue
            counts = {c: sum(r["failures"].get(c, 0) for r in selected) for c in classes}
            table.rows.append([name, mode.title(), str(sum(counts.values())), *(str(counts[c]) for c in classes)])
    return table


def icl_lora_table(rows: list[dict[str, Any]]) -> Table | None:
    """Paper 002: ICL shot counts (starting model) against LoRA ranks (SFT), pass@1 and pass@10."""
    shots = sorted({r["shots"] for r in rows if r["technique"] == "base"})
    ranks = sorted({r["lora_r"] for r in rows if r["technique"] == "sft"})
    if len(shots) < 2 and len(ranks) < 2:
        return None
    metrics = sorted({k for r in rows for k in r if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    benchmarks = sorted({r["benchmark"] for r in rows if r["mode"] == "command"})
    table = Table("icl-vs-lora", "In-context learning vs LoRA fine-tuning, Command mode (paper 002)",
                  ["model", "setting"] + [f"{b} {m}" for b in benchmarks for m in metrics])
    for pair, pathway in sorted({(r["pair"], r["pathway"]) for r in rows}):
        for s in shots:
            table.rows.append([f"{pair} {pathway.upper()}", f"ICL {s}-shot", *(
                _fmt(_score(rows, m, pair=pair, pathway=pathway, technique="base", shots=s, benchmark=b,
                            mode="command")) for b in benchmarks for m in metrics)])
        for rank in ranks:
            if any(r["pair"] == pair and r["pathway"] == pathway and r["lora_r"] == rank for r in rows):
                table.rows.append([f"{pair} {pathway.upper()}", f"LoRA r={rank}", *(
                    _fmt(_score(rows, m, pair=pair, pathway=pathway, technique="sft", lora_r=rank, final=True,
                                shots=0, benchmark=b, mode="command")) for b in benchmarks for m in metrics)])
    return table


def early_stop_table(record: SweepRecord) -> Table:
    table = Table("early-stop", "Early stop: SFT degradation checks and skipped stages",
                  ["stage", "start pass@1", "SFT pass@1", "threshold", "decision"])
    for st in record.stages:
        if st.degradation:
            d = st.degradation
            table.rows.append([st.label, _fmt(d["start_score"]), _fmt(d["sft_score"]), str(d["threshold"]),
                               "degraded" if d["degraded"] else "ok"])
    for s in record.skipped:
        table.rows.append([s.label, "-", "-", "-", f"skipped: {s.reason}"])
    return table


def data_table(store: ArtifactStore, record: SweepRecord) -> Table:
    from codealign.tasks.preferences.report import table_rows

    table = Table("preference-data", "Preference data (generate-preferences runs)",
                  ["data run", "instructions", "responses", "dataset", "rows", "dropped (why: count)"])
    for label, sub in record.data_runs.items():
        key = layout.run_dataset(sub, "stats.json")
        if not store.exists(key):
            continue
        stats = store.get_json(key)
        for name, count, drops in table_rows(stats):
            table.rows.append([f"{label} ({sub})", str(stats["instructions"]), str(stats["responses"]), name, count,
                               drops])
    return table


def steps_png(rows: list[dict[str, Any]], run_id: str) -> bytes | None:
    """Every metric vs checkpoint step along the pathway, per benchmark and mode."""
    plain = [r for r in rows if r["shots"] == 0]
    panels = sorted({(r["benchmark"], r["mode"]) for r in plain})
    if not panels:
        return None
    metric = _first_k(plain)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (benchmark, mode) in zip(axes[0], panels):
        mine = [r for r in plain if r["benchmark"] == benchmark and r["mode"] == mode]
        for stage in sorted({r["stage"] for r in mine if r["stage"]}):
            points = sorted((r["pathway_step"], r[metric]) for r in mine if r["stage"] == stage)
            first = next(r for r in mine if r["stage"] == stage)
            start = [r for r in mine if r["technique"] == "base" and r["pair"] == first["pair"]
                     and r["pathway"] == first["pathway"]]
            if first["technique"] == "sft" and start:
                points = [(0, start[0][metric]), *points]
            elif first["technique"] in ("dpo", "bonbon"):  # one line through the pathway: base → SFT → this
                sft = [r for r in mine if r["technique"] == "sft" and r["final"] and r["pair"] == first["pair"]
                       and r["pathway"] == first["pathway"] and r["seed"] == first["seed"]
                       and r["lora_r"] == first["lora_r"]]
                if sft:
                    points = [(sft[0]["pathway_step"], sft[0][metric]), *points]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=stage)
        for r in (r for r in mine if r["technique"] == "base"):
            ax.scatter([0], [r[metric]], marker="s", color="black")
        ax.set(title=f"{benchmark}, {mode} mode", xlabel="training step along the pathway", ylabel=metric)
        ax.legend(fontsize=7)
    return png_bytes(fig, f"alignment-sweep {run_id}: {metric} per checkpoint", dpi=100)


def previous_run(store: ArtifactStore, run_id: str, preset: str | None) -> str | None:
    """The newest completed sweep that started before ``run_id``: of the same deployment when a
    deployment started ``run_id`` (tonight's nightly against last night's, not against an
    on-demand sweep in between), else of the same preset.  Reads only the store's sweeps."""
    sweeps = {}
    for key in store.list(layout.RUNS):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == layout.SWEEP_RECORD:
            sweeps[parts[1]] = runs.read_status(store, parts[1])
    mine = sweeps.get(run_id)
    if mine is None:
        return None
    deployment = runs.started_by(store, run_id)

    def same_kind(other: str) -> bool:
        if deployment is not None:
            return runs.started_by(store, other) == deployment
        return read_record(store, other).preset == preset

    earlier = sorted(((s.started_at, other) for other, s in sweeps.items()
                      if s is not None and s.state == "completed" and s.started_at < mine.started_at),
                     reverse=True)
    return next((other for _, other in earlier if same_kind(other)), None)


def against_previous(store: ArtifactStore, run_id: str, preset: str | None) -> Table | None:
    """This sweep against the previous completed one of its deployment or preset, cell by cell (compare.py):
    both pass@1 scores, Δ with its 95% paired interval over tasks; reused cells marked so."""
    from codealign.tasks.sweeps.compare import compare_runs

    before = previous_run(store, run_id, preset)
    if before is None:
        return None
    cells = compare_runs(store, before, run_id)
    names = ["pair", "pathway", "technique", "objective", "seed", "benchmark", "mode"]
    same = f"deployment {deployment}" if (deployment := runs.started_by(store, run_id)) else f"preset {preset or '-'}"
    table = Table("against-previous", f"Against the previous completed run {before} (same {same}): "
                  "pass@1, Δ = this − previous, 95% paired bootstrap over tasks",
                  [*names, before, run_id, "Δ [95% interval]", "beyond noise"])
    for c in cells:
        if c.delta is not None:
            change = c.delta.points()
            beyond = "yes" if c.delta.excludes_zero else "no"
        else:
            change, beyond = c.note or "-", "-"
        table.rows.append([*(str(c.cell[n]) if c.cell.get(n) is not None else "-" for n in names),
                           *(f"{v:.3f}" if v is not None else "-" for v in (c.a, c.b)), change, beyond])
    return table


def build(store: ArtifactStore, run_id: str) -> Report:
    """The report of sweep ``run_id`` from its record and results in the store."""
    record = read_record(store, run_id)
    rows = runs.read_results(store, run_id) if store.exists(layout.run_record(run_id, layout.RESULTS)) else []
    tables = alignment_tables(rows, record, per_task=lambda unit: unit_pass1(store, unit))
    tables += [t for t in (tax_table(rows), failures_table(rows), icl_lora_table(rows)) if t is not None]
    tables += [early_stop_table(record), data_table(store, record)]
    if (previous := against_previous(store, run_id, record.preset)) is not None:
        tables.append(previous)
    png = steps_png(rows, run_id)
    lines = [f"# alignment-sweep {run_id}", "", f"- **preset**: {record.preset or '-'}",
             f"- **evaluated rows**: {len(rows)}; **stages trained**: {len(record.stages)}; "
             f"**skipped**: {len(record.skipped)}",
             "- **sub-runs**: " + ", ".join([*record.data_runs.values(), *(s.run_id for s in record.stages),
                                             *record.all_eval_runs()]),
             *([f"- **time**: the pieces took {cp['sum_seconds']:.0f} s in all; critical path "
                f"{cp['seconds']:.0f} s ({' → '.join(cp['pieces'])})"] if (cp := record.critical_path) else []),
             *(f"- **tracking** {s.label}: {tracking.describe(ids)}" for s in record.stages
               if (ids := tracking.read_run_ids(store, s.stage_key))),
             ""]
    status = runs.read_status(store, run_id)
    if status and REGRESSION in status.failed:
        lines += [f"**Failed: {status.failed[REGRESSION]}** (the results above are stored all the same)", ""]
    if png:
        lines += ["![metric vs checkpoint step](steps.png)", ""]
    lines += [t.markdown() for t in tables]
    return Report(run_id, tables, png, "\n".join(lines))


def publish(store: ArtifactStore, run_id: str, producer: dict[str, Any]) -> Published:
    """Build the report and write it to ``runs/<id>/report/`` (report.md, steps.png)."""
    report = build(store, run_id)
    inputs = tuple(InputRef(store.uri(k), store.meta(k).sha256)
                   for k in (layout.run_record(run_id, layout.RESULTS),) if store.exists(k))
    meta = ArtifactMeta("sweep-report", producer, inputs)
    png_uri = None
    if report.png:
        png_uri = store.put(layout.run_record(run_id, f"{REPORT_DIR}/steps.png"), report.png, meta).uri
    md = store.put(layout.run_record(run_id, f"{REPORT_DIR}/report.md"), report.markdown.encode(), meta)
    return Published(report, md.uri, png_uri)
