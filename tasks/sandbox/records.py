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
    """Inputs and expected outputs for evalplus-style testing (see tasks.problems.registry)."""

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
    says how many passed (preference data ranks responses by it), each under its own CPU limit.
    ``setup`` runs before them (imports, fixtures).  Judged by the judge through a proxy to the
    sample, except when ``untrusted`` (a model wrote them: SelfCodeAlign's self-tests)."""

    statements: list[str]
    limit_s: float = 1.0
    setup: str = ""
    untrusted: bool = False


@dataclass(frozen=True)
class ProxiedTests:
    """Test code that runs in the judge with the sample's functions as proxies (HumanEval's
    ``check(candidate)``, MBPP's asserts, toy tests): ``helpers`` (trusted imports and the
    prompt's own helpers, see tasks.sandbox.judge.trusted_helpers) run first, then ``code``."""

    entry_point: str
    code: str
    helpers: str = ""


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


# What a job's tests are: held by the judge (never sent to the sample's worker), apart from a
# compiled language's toolchain, which the sample process needs to build and run its program.
Tests = DifferentialJob | AssertTests | CompiledTests | ProxiedTests


@dataclass(frozen=True)
class Job:
    """One program to run.  ``mode``:

    * judged by the judge, the sample only answering calls: ``differential`` (compare outputs,
      :class:`DifferentialJob`), ``record`` (collect the outputs of trusted canonical code, to
      build the expected outputs once), ``proxied`` (test code with the sample's functions as
      proxies, :class:`ProxiedTests`), ``asserts`` (:class:`AssertTests`, counted one by one);
    * judged in the sample's own process (``judged_in_process`` verdicts): ``script`` (passes if
      the program, tests included, runs to its end), ``asserts`` with untrusted tests, and
      ``compiled`` (another language: build and run it, :class:`CompiledTests`)."""

    task_id: str
    sample_index: int
    program: str
    mode: Literal["script", "differential", "asserts", "compiled", "record", "proxied"] = "script"
    tests_key: str | None = None
    benchmark: str = ""
    min_cpu_s: float | None = None  # raise the CPU limit for tasks whose reference is slow
    # ``compiled`` jobs: the test file's header and the tests, with ``program`` the solution
    # alone, so the sandbox can guard the seams (tasks.sandbox.guards); empty: ``program`` is
    # the whole program, run as it is
    setup: str = ""
    tests_code: str = ""

    @property
    def judged_in_process(self) -> bool:
        """Does the sample judge itself (its tests in its own process)?"""
        return self.mode in ("script", "compiled")

    def tests_for_worker(self, tests: Tests | None) -> Tests | None:
        """What of the tests the sample's worker gets: those of a job judged in process, and
        model-written tests (run in a tests process of their own, see tasks.sandbox.selftests);
        nothing else (the judge keeps them)."""
        untrusted = self.mode == "asserts" and isinstance(tests, AssertTests) and tests.untrusted
        return tests if self.judged_in_process or untrusted else None

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
    # (read by the judge from the sample's process CPU clock around each call).  None otherwise.
    tests_cpu_s: float | None = None
    # the tests ran in the sample's own process (tests the judge cannot proxy, model-written
    # tests, compiled languages): a determined sample can reach them (docs/architecture.md)
    judged_in_process: bool = False
    # a failure class the judge names: "not_plain_data" (returned a value that is not plain
    # data), "ended_early" (ended before answering every call); "" otherwise
    flag: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("outputs")
        return d
