"""How sure a score or a difference of scores is: bootstrap intervals over tasks.

Why: a benchmark score is a mean over a few dozen to a few hundred tasks, so "+12.5%" on 60 toy
problems can be 4 problems.  Tasks are the unit that varies (samples of one task are not
independent draws of the benchmark), so intervals resample tasks: the percentile bootstrap of the
mean per-task pass@1, and for two runs over the same tasks the *paired* bootstrap of the mean
per-task difference (each resample draws the same tasks for both runs, so the tasks' own
difficulty cancels).  A difference is beyond noise when its interval excludes 0.

Deterministic: a fixed seed, so the same inputs give the same interval in every report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.store import ArtifactStore

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval (same units as the estimate)."""

    estimate: float
    low: float
    high: float
    tasks: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def points(self) -> str:
        """A difference of rates in percentage points with its interval: "+5.0 [-1.7, +11.7] pts"."""
        return f"{100 * self.estimate:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}] pts"

    def to_json(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "tasks": self.tasks,
                "beyond_noise": self.excludes_zero}


def per_task_pass1(verdicts: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Each task's pass@1 (its passing fraction of samples), from verdicts as JSON records."""
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    for v in verdicts:
        n[v["task_id"]] += 1
        c[v["task_id"]] += bool(v.get("passed"))
    return {task: c[task] / n[task] for task in n}


def unit_pass1(store: ArtifactStore, unit: str | None) -> dict[str, float] | None:
    """Per-task pass@1 of an evaluation unit, from its verdicts (None: no such verdicts)."""
    key = layout.unit_artifact(unit, "verdicts.jsonl") if unit else None
    return per_task_pass1(store.get_jsonl(key)) if key and store.exists(key) else None


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(scores: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int = SEED) -> Interval:
    """The mean of per-task ``scores`` with its percentile-bootstrap interval over tasks."""
    values = np.asarray(scores, dtype=float)
    if not len(values):
        raise ValueError("no tasks to take an interval over")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return Interval(float(values.mean()), *_percentiles(means, level), len(values))


def paired_difference(before: dict[str, float], after: dict[str, float], resamples: int = RESAMPLES,
                      level: float = LEVEL, seed: int = SEED) -> Interval:
    """``after - before`` in mean per-task score over the tasks both have, with its paired
    bootstrap interval (tasks resampled together for both)."""
    tasks = sorted(set(before) & set(after))
    if not tasks:
        raise ValueError("the two results share no task")
    return mean_interval([after[t] - before[t] for t in tasks], resamples, level, seed)
