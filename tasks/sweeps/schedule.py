"""A sweep's pieces as a dependency graph, run as many at a time as the cluster holds.

The plan (plan.py) names the work; this module orders it.  A piece runs once everything it
needs has completed; independent pieces (the data jobs of different model pairs, the stages of
different pathways, seeds and ranks, one branch's evaluation while another trains) run
concurrently, up to a bound.  A piece that fails or is skipped makes its dependents skipped,
saying why; the others go on.

    data    <pair>-<pathway>-s<seed>              needs nothing
    stage   <branch>-sft                          needs its data job
    stage   <branch>-<objective>-<dpo|bonbon>     needs its data job and its SFT stage
    eval    eval-starts                           needs nothing (the starting models)
    eval    eval-<stage label>                    needs that stage (its checkpoints)

Plain Python: threads run the pieces, so a piece's function may block (a Prefect sub-flow, a
Ray call); the flow (flows/alignment_sweep.py) supplies that function.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from codealign.tasks.sweeps.plan import SweepPlan

PieceKind = Literal["data", "stage", "eval"]
STARTS_EVAL = "eval-starts"


@dataclass(frozen=True)
class Piece:
    label: str
    kind: PieceKind
    needs: tuple[str, ...] = ()


@dataclass
class PieceTiming:
    """When a piece ran (wall-clock seconds since the epoch) and how it ended."""

    label: str
    kind: str
    state: str  # completed | failed | skipped
    started_at: float | None = None
    ended_at: float | None = None
    detail: str = ""
    work: dict[str, int] = field(default_factory=dict)  # what its time is measured against (forecast.py)

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at) if self.started_at is not None and self.ended_at is not None else 0.0


class PieceSkipped(Exception):
    """Raised by a piece's function when it decides not to run (the early-stop gate); its
    dependents are skipped too, and the sweep does not count it as failed."""


def eval_label(stage_label: str) -> str:
    return f"eval-{stage_label}"


def pieces(plan: SweepPlan, sft_dataset: bool = False) -> list[Piece]:
    """The plan's pieces in a valid serial order (every piece after what it needs)."""
    out = [Piece(job.label, "data") for job in plan.data_jobs]
    out.append(Piece(STARTS_EVAL, "eval"))
    for stage in plan.stages:
        needs = (() if sft_dataset else (stage.data.label,)) + ((stage.after,) if stage.after else ())
        out.append(Piece(stage.label, "stage", needs))
        out.append(Piece(eval_label(stage.label), "eval", (stage.label,)))
    return out


@dataclass
class Outcome:
    """What running the graph gave: per piece, its result (completed ones) and timing."""

    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, PieceTiming] = field(default_factory=dict)

    def state(self, label: str) -> str:
        return self.timings[label].state


def run_pieces(graph: list[Piece], run: Callable[[Piece], Any], max_parallel: int,
               on_end: Callable[[PieceTiming], None] = lambda t: None) -> Outcome:
    """Run every piece of ``graph`` with ``run`` (in threads, at most ``max_parallel`` at once),
    each after the pieces it needs completed.  ``run`` raising :class:`PieceSkipped` skips the
    piece; any other exception fails it; either way its dependents are skipped.  Each thread
    runs in a copy of the caller's context (contextvars), so a Prefect sub-flow started there
    is a child of the caller's flow run.  ``on_end`` sees each piece's timing as it ends (in
    the calling thread)."""
    labels = [p.label for p in graph]
    if len(set(labels)) != len(labels):
        raise ValueError(f"piece labels repeat: {labels}")
    known = set(labels)
    for p in graph:
        if missing := [n for n in p.needs if n not in known]:
            raise ValueError(f"piece {p.label} needs unknown pieces {missing}")
    outcome = Outcome()
    waiting = list(graph)
    running: dict[Future[Any], tuple[Piece, float]] = {}

    def end(timing: PieceTiming) -> None:
        outcome.timings[timing.label] = timing
        on_end(timing)

    with ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="sweep-piece") as pool:
        while waiting or running:
            progressed = True
            while progressed:  # settle skips (a skip can unblock further skips) before starting pieces
                progressed = False
                for piece in list(waiting):
                    blocked = [n for n in piece.needs
                               if n in outcome.timings and outcome.timings[n].state != "completed"]
                    if blocked:
                        waiting.remove(piece)
                        end(PieceTiming(piece.label, piece.kind, "skipped", detail=f"{blocked[0]} did not complete"))
                        progressed = True
            for piece in [p for p in waiting if all(n in outcome.timings for n in p.needs)]:
                if len(running) >= max(1, max_parallel):
                    break
                waiting.remove(piece)
                context = contextvars.copy_context()
                running[pool.submit(context.run, run, piece)] = (piece, time.time())
            if not running:
                if waiting:  # cannot happen for a graph built from a plan: say so rather than hang
                    raise ValueError(f"pieces wait on each other: {[p.label for p in waiting]}")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                piece, started = running.pop(future)
                ended = time.time()
                try:
                    outcome.results[piece.label] = future.result()
                    end(PieceTiming(piece.label, piece.kind, "completed", started, ended))
                except PieceSkipped as why:
                    end(PieceTiming(piece.label, piece.kind, "skipped", started, ended, str(why)))
                except Exception as exc:  # noqa: BLE001 - a failed piece is recorded; the others go on
                    end(PieceTiming(piece.label, piece.kind, "failed", started, ended, f"{type(exc).__name__}: {exc}"))
    return outcome


def critical_path(graph: Iterable[Piece], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of dependent pieces by ``seconds`` (what no amount of parallelism can
    shorten), as (its total, its labels in order).  Pieces missing from ``seconds`` count 0."""
    best: dict[str, tuple[float, list[str]]] = {}
    for piece in graph:  # in a valid serial order: every need is already in best
        before = max((best[n] for n in piece.needs if n in best), default=(0.0, []), key=lambda b: b[0])
        best[piece.label] = (before[0] + seconds.get(piece.label, 0.0), [*before[1], piece.label])
    return max(best.values(), default=(0.0, []), key=lambda b: b[0])


def parallel_bound(limit: int, stage_workers: int, use_gpu: bool, resources: dict[str, float]) -> int:
    """How many pieces run at once: ``limit`` (the sweep's ``max_parallel``), and no more than
    the training stages the cluster holds side by side (each needs ``stage_workers`` GPUs, or
    CPUs on a CPU cluster, for its Ray Train workers).  Samplers reserve no CPU and sandbox
    pools take what is free, so training is what bounds the cluster; at least 1."""
    fits = int(resources.get("GPU" if use_gpu else "CPU", 0) // max(1, stage_workers))
    return max(1, min(limit, fits))
