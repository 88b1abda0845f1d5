"""``execute_tested(programs) -> verdicts``: programs judged by their own assert statements.

Preference data (responses to instructions with given or model-written tests) is judged here,
one assert at a time; benchmark problems are turned into test plans one layer up
(:mod:`codealign.tasks.evaluation.execute`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from codealign.tasks.sandbox.limits import Limits
from codealign.tasks.sandbox.pool import SandboxPool
from codealign.tasks.sandbox.records import AssertTests, Job, Verdict


@dataclass(frozen=True)
class TestedProgram:
    """A program judged by its own assert statements, counted one by one (preference data:
    responses to instructions with given or self-written tests)."""

    task_id: str
    index: int
    program: str
    tests: tuple[str, ...]
    tests_key: str  # programs judged by the same tests share a key
    setup: str = ""  # run before the tests (imports, fixtures)
    tests_trusted: bool = True  # False: a model wrote them (never run in the judge)


def execute_tested(programs: Sequence[TestedProgram], limits: Limits | None = None, workers: int | None = None,
                   test_cpu_s: float = 1.0) -> list[Verdict]:
    """Run each program, then each of its tests under its own CPU limit (``test_cpu_s``);
    verdicts in input order, with ``tests_passed`` / ``tests_total``.  The whole program may
    take ``limits.cpu_s`` plus the tests' limits."""
    limits = limits or Limits()

    def job(p: TestedProgram, in_process: bool) -> tuple[Job, AssertTests]:
        """Given tests run in the judge, model-written ones in a tests process of their own;
        given tests the judge cannot proxy run in the sample's process (``script``)."""
        cpu = limits.cpu_s + test_cpu_s * len(p.tests)
        if in_process:
            program = f"{p.program}\n{p.setup}\n" if p.setup else p.program
            return (Job(p.task_id, p.index, program, "script", p.tests_key, "", cpu),
                    AssertTests(list(p.tests), test_cpu_s))
        return (Job(p.task_id, p.index, p.program, "asserts", p.tests_key, "", cpu),
                AssertTests(list(p.tests), test_cpu_s, p.setup, untrusted=not p.tests_trusted))

    with SandboxPool(workers, limits) as pool:
        verdicts = list(pool.run([job(p, False) for p in programs], limits))
        again = {(v.task_id, v.sample_index) for v in verdicts if v.status == "unproxiable"}
        if again:
            redone = {(v.task_id, v.sample_index): v
                      for v in pool.run([job(p, True) for p in programs if (p.task_id, p.index) in again], limits)}
            verdicts = [redone.get((v.task_id, v.sample_index), v) for v in verdicts]
    order = {(p.task_id, p.index): i for i, p in enumerate(programs)}
    verdicts.sort(key=lambda v: order[(v.task_id, v.sample_index)])
    for verdict, program in zip(verdicts, programs):
        if verdict.tests_total is None:  # never reached its tests (syntax error, crash, time out)
            verdict.tests_passed, verdict.tests_total = 0, len(program.tests)
    return verdicts


def with_progress(it: Iterator[Verdict], total: int, enabled: bool) -> Iterator[Verdict]:
    """``it`` as it is, or with a progress bar on stderr (passed so far, time left)."""
    if not enabled:
        yield from it
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("executing"), BarColumn(), MofNCompleteColumn(), TextColumn("passed {task.fields[ok]}"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("exec", total=total, ok=0)
        ok = 0
        for verdict in it:
            ok += verdict.passed
            bar.update(task, advance=1, ok=ok)
            yield verdict
