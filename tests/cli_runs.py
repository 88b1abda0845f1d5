"""Runs of the `codealign evaluate-checkpoints` command line that several test layers start, and
what a quiet terminal looks like."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def flow_command(store: Path, train: Path, address: str, run_id: str) -> list[str]:
    return [sys.executable, "-m", "codealign", "evaluate-checkpoints", "--checkpoints", str(train),
            "--store", str(store),
            "--benchmarks", "toy,toy-infill", "--modes", "flow", "--n", "2", "--k", "1,2", "--temperature", "0.8",
            "--max-tokens", "48", "--limit", "4", "--max-model-len", "512", "--enforce-eager", "--workers", "1",
            "--ray-address", address, "--run-id", run_id]


QUIET_NOISE = ("(pid=", "vllm", "Starting temporary server", "Stopping temporary server", "Beginning flow run")


def assert_quiet(r: subprocess.CompletedProcess, log: Path, units: int) -> None:
    """A quiet terminal: the progress display, the result table, where the log is; Ray's worker
    prefixes, vLLM's notes and Prefect's server lines went to the run's log instead."""
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{units}/{units} units complete" in r.stderr
    terminal = r.stdout + r.stderr
    assert f"log: {log}" in terminal and f"evaluate-checkpoints {log.parent.name}" in terminal
    for noise in QUIET_NOISE:
        assert noise not in terminal, noise
    assert len(terminal.splitlines()) < 40, terminal
    assert "Beginning flow run" in log.read_text() and "Finished in state Completed" in log.read_text()
