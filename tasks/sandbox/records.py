"""Records that cross the sandbox boundary: limits, jobs and verdicts (stdlib only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal


@dataclass(frozen=True)
class SampleLimits:
    """The limits as the sandbox worker applies them (a plain dataclass: workers stay free of
    heavy imports, because every sample is a fork of a worker and forks cost per mapped page)."""

    cpu_s: float
    wall_s: float
    memory_mb: int
    file_size_mb: int
    max_processes: int
    output_bytes: int


@dataclass(frozen=True)
class DifferentialJob:
    """Inputs and expected outputs for evalplus-style testing (see tasks.benchmarks.registry)."""

    flavor: str
    entry_point: str
    base_inputs: list[Any]
    plus_inputs: list[Any]
    atol: float
    output_not_none: bool = False
    base_expected: list[Any] | None = None
    plus_expected: list[Any] | None = None
    # CPU seconds each input may take (evalplus' per-input limits); None: no per-input limit
    base_limits: list[float] | None = None
    plus_limits: list[float] | None = None


@dataclass(frozen=True)
class AssertTests:
    """Tests as separate ``assert`` statements, run one by one after the program, so a verdict
    says how many passed (preference data ranks responses by it), each under its own CPU limit."""

    statements: list[str]
    limit_s: float = 1.0


# What a job's tests travel as (sent once per worker, keyed by ``Job.tests_key``).
Tests = DifferentialJob | AssertTests


@dataclass(frozen=True)
class Job:
    """One program to run.  ``mode`` is ``script`` (passes if it runs to the end),
    ``differential`` (compare outputs), ``asserts`` (run :class:`AssertTests` one by one and
    count) or ``record`` (collect the outputs of trusted canonical code, to build the expected
    outputs once)."""

    task_id: str
    sample_index: int
    program: str
    mode: Literal["script", "differential", "asserts", "record"] = "script"
    tests_key: str | None = None
    benchmark: str = ""
    min_cpu_s: float | None = None  # raise the CPU limit for tasks whose reference is slow

    def effective_limits(self, limits: SampleLimits) -> SampleLimits:
        if self.min_cpu_s is None or self.min_cpu_s <= limits.cpu_s:
            return limits
        return replace(limits, cpu_s=self.min_cpu_s, wall_s=max(limits.wall_s, 3 * self.min_cpu_s + 10))


@dataclass
class Verdict:
    """The outcome of one sample.  ``passed`` is true only when the tests ran to their end."""

    task_id: str
    sample_index: int
    status: str
    passed: bool
    cpu_s: float
    wall_s: float
    detail: str = ""
    benchmark: str = ""
    outputs: Any = field(default=None, repr=False)
    # ``asserts`` jobs: statements that passed / all statements (None: the program never got
    # to its tests, or another mode)
    tests_passed: int | None = None
    tests_total: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("outputs")
        return d
