"""Compare two runs cell by cell: tonight against last night, or a changed setting against the
old one (``codealign compare RUN_A RUN_B``).

A cell is what a report's table shows in one place: for a sweep, (model pair, pathway,
technique, objective, seed, LoRA rank, ICL shots, benchmark, mode) at the stage's final
checkpoint; for an evaluation run, (checkpoint, benchmark, mode).  Each cell gives both runs'
pass@1, their difference and its 95% paired-bootstrap interval over the tasks both evaluated
(tasks/evaluation/intervals.py), read from the units' verdicts.  A cell whose unit is the same
in both runs (same checkpoint content, benchmark, mode and settings: the piece was reused) is
marked ``reused``: its Δ is 0 by construction, not a measured "no change".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.evaluation.intervals import Interval, paired_difference, unit_pass1
from codealign.tasks.sweeps.config import RegressionSettings
from codealign.tasks.sweeps.results import SWEEP_RECORD, evaluated_rows, read_record

SWEEP_CELL = ("pair", "pathway", "technique", "objective", "seed", "lora_r", "shots", "benchmark", "mode")
EVAL_CELL = ("checkpoint", "benchmark", "mode")
METRIC = "pass@1"


@dataclass
class CellComparison:
    """One cell of two runs."""

    cell: dict[str, Any]
    a: float | None
    b: float | None
    delta: Interval | None = None
    reused: bool = False
    note: str = ""
    units: tuple[str | None, str | None] = field(default=(None, None))

    def to_json(self) -> dict[str, Any]:
        return {**self.cell, "a": self.a, "b": self.b, "delta": self.delta.to_json() if self.delta else None,
                "reused": self.reused, "note": self.note, "units": list(self.units)}


def _cells(store: ArtifactStore, run_id: str) -> tuple[tuple[str, ...], dict[tuple, dict[str, Any]]]:
    """The run's rows by cell: a sweep's final checkpoints, or an evaluation run's rows."""
    if store.exists(layout.run_record(run_id, SWEEP_RECORD)):
        rows, _ = evaluated_rows(store, read_record(store, run_id))
        rows, names = [r for r in rows if r.get("final")], SWEEP_CELL
    else:
        rows, names = runs.read_results(store, run_id), EVAL_CELL
    return names, {tuple(r.get(n) for n in names): r for r in rows}


def compare_runs(store: ArtifactStore, run_a: str, run_b: str) -> list[CellComparison]:
    """Every cell of either run, ``b - a`` where both have it."""
    names_a, a = _cells(store, run_a)
    names_b, b = _cells(store, run_b)
    if names_a != names_b:
        raise ValueError(f"{run_a} and {run_b} are not runs of one kind (a sweep and an evaluation run)")
    out = []
    for key in sorted(set(a) | set(b), key=lambda k: tuple(str(x) for x in k)):
        ra, rb = a.get(key), b.get(key)
        cell = dict(zip(names_a, key, strict=True))
        row = CellComparison(cell, ra.get(METRIC) if ra else None, rb.get(METRIC) if rb else None,
                             units=(ra.get("unit") if ra else None, rb.get("unit") if rb else None))
        if ra is None or rb is None:
            row.note = f"only in {run_a if rb is None else run_b}"
        elif row.units[0] and row.units[0] == row.units[1]:
            row.reused, row.note = True, "reused: the same unit in both runs"
        else:
            pa, pb = unit_pass1(store, row.units[0]), unit_pass1(store, row.units[1])
            if pa is None or pb is None:
                row.note = "no per-task verdicts to compare"
            else:
                row.delta = paired_difference(pa, pb)
        out.append(row)
    return out


def regressions(cells: list[CellComparison], settings: RegressionSettings) -> list[CellComparison]:
    """The cells that got worse beyond noise (the whole 95% interval below 0) and by more than
    ``settings.threshold_points``, among the techniques and benchmarks it names."""
    return [c for c in cells if c.delta is not None and c.delta.high < 0
            and -100 * c.delta.estimate > settings.threshold_points
            and (settings.techniques is None or c.cell.get("technique") in settings.techniques)
            and (settings.benchmarks is None or c.cell.get("benchmark") in settings.benchmarks)]


def describe(c: CellComparison) -> str:
    """A cell in one phrase: what it is and how far it fell."""
    where = " ".join(str(v) for k, v in c.cell.items() if v is not None and k not in ("shots",))
    d = c.delta
    return f"{where}: pass@1 {c.a:.3f} -> {c.b:.3f} ({d.points()})" if d else where
