"""Records that cross the sandbox boundary: limits, jobs and verdicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["passed", "failed", "error", "timeout", "memory", "crashed"]
STATUSES: tuple[str, ...] = ("passed", "failed", "error", "timeout", "memory", "crashed")


class Limits(BaseModel):
    """Per-sample resource limits.

    CPU time is the primary limit, so a verdict does not flip when the machine is busy; the
    wall-clock limit is only a backstop against samples that sleep or block.  The defaults pass
    every canonical solution of every shipped benchmark with a wide margin.
    """

    cpu_s: float = Field(10.0, gt=0, description="CPU seconds per sample (all its processes' own limit)")
    wall_s: float | None = Field(None, gt=0, description="wall-clock backstop; default 3 x cpu_s + 10 s")
    memory_mb: int = Field(4096, gt=0, description="address-space limit per process, MiB")
    file_size_mb: int = Field(64, gt=0, description="largest file a sample may write, and its tmpfs size, MiB")
    max_processes: int = Field(64, gt=0, description="processes (and threads) a sample may have at once")
    output_bytes: int = Field(64 * 1024, ge=0, description="stdout+stderr kept per sample; the rest is dropped")

    @property
    def wall_limit_s(self) -> float:
        return self.wall_s if self.wall_s is not None else 3 * self.cpu_s + 10


@dataclass(frozen=True)
class DifferentialJob:
    """Inputs and expected outputs for evalplus-style testing (see tasks.benchmarks)."""

    flavor: str
    entry_point: str
    base_inputs: list[Any]
    plus_inputs: list[Any]
    atol: float
    output_not_none: bool = False
    base_expected: list[Any] | None = None
    plus_expected: list[Any] | None = None


@dataclass(frozen=True)
class Job:
    """One program to run.  ``mode`` is ``script`` (passes if it runs to the end),
    ``differential`` (compare outputs) or ``record`` (collect the outputs of trusted canonical
    code, to build the expected outputs once)."""

    task_id: str
    sample_index: int
    program: str
    mode: Literal["script", "differential", "record"] = "script"
    tests_key: str | None = None
    benchmark: str = ""
    min_cpu_s: float | None = None  # raise the CPU limit for tasks whose reference is slow

    def effective_limits(self, limits: Limits) -> Limits:
        if self.min_cpu_s is None or self.min_cpu_s <= limits.cpu_s:
            return limits
        wall = None if limits.wall_s is None else max(limits.wall_s, 3 * self.min_cpu_s + 10)
        return limits.model_copy(update={"cpu_s": self.min_cpu_s, "wall_s": wall})


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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("outputs")
        return d
