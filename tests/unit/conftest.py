"""Unit-layer fixtures: no server starts here (vLLM engines run in this process)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def problem_factory():
    """Build a tiny script-style problem whose test calls ``f()`` and checks it returns 1."""
    from codealign.tasks.problems.problem import Problem

    def make(test: str = "assert f() == 1", task_id: str = "t/0") -> Problem:
        return Problem("toy-test", task_id, "", "", "f", "", test=test, completion_is_program=True)

    return make


def _engine(path) -> tuple:
    from codealign.tasks.evaluation.pipeline import load_tokenizer
    from codealign.tasks.generation.sampling import EngineSettings, get_engine

    return get_engine(str(path), EngineSettings(max_model_len=512)), load_tokenizer(str(path)), str(path)


@pytest.fixture(scope="session")
def toy_base(toy_model_paths):
    """(vLLM engine, tokenizer, path) for toy-base, one engine for the session."""
    return _engine(toy_model_paths["toy-base"])


@pytest.fixture(scope="session")
def toy_instruct(toy_model_paths):
    return _engine(toy_model_paths["toy-instruct"])
