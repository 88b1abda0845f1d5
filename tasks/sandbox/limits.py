"""Sandbox limits as user configuration (a pydantic model: CLI options, Prefect UI forms)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from codealign.tasks.sandbox.records import SampleLimits


class Limits(BaseModel):
    """Per-sample resource limits.

    CPU time is the primary limit, so a verdict does not flip when the machine is busy; the
    wall-clock limit is only a backstop against samples that sleep or block.  The defaults pass
    every canonical solution of every shipped benchmark with a wide margin.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not ignored

    cpu_s: float = Field(3.0, gt=0, description="CPU seconds per sample (all its processes' own limit)")
    wall_s: float | None = Field(None, gt=0, description="wall-clock backstop; default 3 x cpu_s + 10 s")
    memory_mb: int = Field(4096, gt=0, description="address-space limit per process, MiB")
    file_size_mb: int = Field(64, gt=0, description="largest file a sample may write, and its tmpfs size, MiB")
    max_processes: int = Field(64, gt=0, description="processes (and threads) a sample may have at once")
    output_bytes: int = Field(64 * 1024, ge=0, description="stdout+stderr kept per sample; the rest is dropped")

    @property
    def wall_limit_s(self) -> float:
        return self.wall_s if self.wall_s is not None else 3 * self.cpu_s + 10

    def for_worker(self) -> SampleLimits:
        return SampleLimits(self.cpu_s, self.wall_limit_s, self.memory_mb, self.file_size_mb, self.max_processes,
                            self.output_bytes)
