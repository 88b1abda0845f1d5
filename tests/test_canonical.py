"""Every canonical solution of every benchmark passes under the default limits."""

from __future__ import annotations

import pytest

from tasks.benchmarks.registry import BENCHMARKS, load_benchmark
from tasks.generation.samples import Sample
from tasks.sandbox.execute import execute


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_canonical_solutions_pass(name):
    problems = load_benchmark(name)
    verdicts = execute(problems, [Sample(p.task_id, 0, p.canonical_completion) for p in problems])
    failures = [f"{v.task_id}: {v.status} {v.detail}" for v in verdicts if not v.passed]
    print(f"{name} {len(verdicts) - len(failures)}/{len(verdicts)}")
    assert not failures, "\n".join(failures)
