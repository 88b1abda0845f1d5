"""Shared test set-up: the data directory and a throw-away cache for expected outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("CODEALIGN_DATA_DIR", str(REPO.parent / "shared" / "datasets"))


@pytest.fixture()
def problem_factory():
    """Build a tiny script-style problem whose test calls ``f()`` and checks it returns 1."""
    from tasks.benchmarks import Problem

    def make(test: str = "assert f() == 1", task_id: str = "t/0") -> Problem:
        return Problem("toy-test", task_id, "", "", "f", "", test=test, completion_is_program=True)

    return make
