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


@dataclass(frozen=True)
class CompiledTests:
    """How a program in another language is built and run (see tasks.sandbox.toolchains): the
    program is written to ``source_name`` in the sample's work directory, ``copies`` are copied
    in (a warm build cache), each ``compile`` command runs under the compile limits, then ``run``
    under the sample's limits.  ``unavailable``: why this language cannot run here (the
    sample's verdict says so instead of running anything)."""

    language: str
    source_name: str
    compile: tuple[tuple[str, ...], ...]
    run: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    copies: tuple[tuple[str, str], ...] = ()
    compile_cpu_s: float = 60.0
    compile_wall_s: float = 120.0
    compile_memory_mb: int = 4096
    fail_on_stderr: bool = False
    unavailable: str = ""

    def process_limits(self, run: SampleLimits) -> SampleLimits:
        """The sample process's own limits: wide enough for the compile step and the run (each
        child gets its step's limits); the wall-clock backstop covers both steps."""
        return replace(run, cpu_s=max(run.cpu_s, self.compile_cpu_s) + run.cpu_s,
                       wall_s=run.wall_s + self.compile_wall_s,
                       memory_mb=max(run.memory_mb, self.compile_memory_mb),
                       max_processes=max(run.max_processes, 256))


# What a job's tests travel as (sent once per worker, keyed by ``Job.tests_key``).
Tests = DifferentialJob | AssertTests | CompiledTests


@dataclass(frozen=True)
class Job:
    """One program to run.  ``mode`` is ``script`` (passes if it runs to the end),
    ``differential`` (compare outputs), ``asserts`` (run :class:`AssertTests` one by one and
    count), ``compiled`` (another language: build and run it, :class:`CompiledTests`) or ``record`` (collect the outputs of trusted canonical code, to build the expected
    outputs once)."""

    task_id: str
    sample_index: int
    program: str
    mode: Literal["script", "differential", "asserts", "compiled", "record"] = "script"
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
    # ``differential`` jobs that passed: CPU seconds spent calling the entry point on all inputs
    # (time.process_time in the sample process, program load excluded; reported by the sample
    # process, checked by the runner against the process's own CPU time).  None otherwise.
    tests_cpu_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("outputs")
        return d
