"""The benchmark problem record: what every benchmark's loader produces and every stage consumes.

A leaf module (standard library only), so that benchmark sources — the registry of shipped
benchmarks, the toy world, user files — can all build problems without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Flavor = Literal["humaneval", "mbpp"]


@dataclass(frozen=True)
class DifferentialTests:
    """evalplus-style tests: call the entry point on each input and compare with the canonical
    solution's output (exact, or within ``atol`` for floats, plus evalplus' special oracles).

    ``base_inputs`` are the benchmark's original inputs and ``plus_inputs`` the added ones; they
    are judged as two groups, as evalplus does (its float tolerance handling restarts per group).
    """

    flavor: Flavor
    base_inputs: list[Any]
    plus_inputs: list[Any]
    atol: float
    output_not_none: bool = False


@dataclass(frozen=True)
class Problem:
    """One benchmark task, whatever the benchmark.

    ``prompt`` is the code a model continues in Flow mode (signature + docstring; the infilling
    prefix); ``instruction`` is the natural-language task for Command mode.  A *completion* is
    what a model writes after the prompt (the middle, for infilling); a *solution* is the full
    program text (:meth:`solution`).
    """

    benchmark: str
    task_id: str
    prompt: str
    instruction: str
    entry_point: str
    canonical_completion: str
    test_setup: str = ""
    test: str = ""
    suffix: str = ""
    split: str = "test"
    completion_is_program: bool = False
    differential: DifferentialTests | None = field(default=None, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def solution(self, completion: str) -> str:
        """The full program a completion stands for (prompt + completion + suffix)."""
        if self.completion_is_program:
            return completion
        return self.prompt + completion + self.suffix

    @property
    def canonical_solution(self) -> str:
        return self.solution(self.canonical_completion)

    def test_program(self, solution: str) -> str:
        """Script-style check program: passing means it runs to its end without an exception."""
        if self.differential is not None:
            raise ValueError(f"{self.task_id} uses differential tests, not a test script")
        # MBPP's test_setup_code builds fixtures from classes the solution defines, so it
        # follows the solution.
        return f"{solution}\n\n{self.test_setup}\n{self.test}\n"
