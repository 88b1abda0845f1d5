"""Why a sample failed: one failure class per failed sample, stored with its verdict.

pass@k says how often a model is right; the papers also ask *how* it is wrong (paper 001
breaks the instruction-tuning tax down this way).  A verdict's status says what the sandbox saw
(failed, error, timeout, memory); the class adds what the sample itself shows, from the raw
model text, the extracted code and the problem:

=====================  ====================================================================
class                  when (first that applies, in this order)
=====================  ====================================================================
``empty``              no code at all (nothing generated, or nothing extractable)
``truncated``          generation stopped at the token limit (``finish_reason == "length"``)
``format:no_code``     Command mode: the answer has no fenced code block (prose, or bare code)
``format:language``    Command mode: its code block is tagged with another language
``over_generation``    the executed code carries more than the answer: Flow mode re-emits the
                       prompt's function; infilling repeats the suffix's first lines; or the
                       code brings tests or a ``__main__`` block of its own
``signature_change``   the entry point is missing, or takes other parameters than the prompt's
``syntax_error``       the program does not parse
``timeout``            a CPU or wall-clock limit was hit
``memory``             the memory limit was hit
``runtime_error:<T>``  an exception of type ``T`` before the tests could judge (``crashed``
                       when the process died without one)
``wrong_answer``       the tests ran and an assertion or an output comparison failed
=====================  ====================================================================

Plain Python (``ast``), no sandbox: classification reads text, never runs it.
"""

from __future__ import annotations

import ast
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from tasks.benchmarks.problem import Problem

CLASSES = ("empty", "truncated", "format:no_code", "format:language", "over_generation", "signature_change",
           "syntax_error", "timeout", "memory", "runtime_error", "wrong_answer")
_FENCE = re.compile(r"^```[ \t]*([A-Za-z0-9_+#.-]*)[ \t]*$", re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")


def _parameters(source: str, name: str) -> list[str] | None:
    """Parameter names of the top-level function ``name`` in ``source`` (None: not found or
    ``source`` does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            args = node.args
            return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return None


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _format_problem(raw: str) -> str | None:
    tags = _FENCE.findall(raw)
    if not tags:
        return "format:no_code"
    openings = tags[::2]  # fences alternate: opening (tagged) and closing
    if not any(tag.lower() in _PYTHON_TAGS for tag in openings):
        return "format:language"
    return None


def _over_generated(problem: Problem, mode: str, code: str) -> bool:
    """The executed code carries more than the answer: the prompt's function again (Flow mode),
    the suffix's first lines (infilling), or tests / a ``__main__`` block of its own."""
    if problem.suffix:
        suffix = [line.strip() for line in problem.suffix.splitlines() if line.strip()][:2]
        middle = [line.strip() for line in code.splitlines() if line.strip()]
        if suffix and any(middle[i:i + len(suffix)] == suffix for i in range(len(middle))):
            return True
    elif mode == "flow" and not problem.completion_is_program and re.search(
            rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE):
        return True
    return bool(re.search(r"^(assert\b|if __name__)", code, re.MULTILINE))


def classify(problem: Problem, mode: str, verdict: dict[str, Any], raw: str | None = None,
             completion: str | None = None, solution: str | None = None,
             finish_reason: str | None = None) -> str | None:
    """The failure class of one sample (None when it passed).  ``raw`` is the model's text,
    ``completion``/``solution`` the code taken from it (as in a samples file)."""
    if verdict.get("passed"):
        return None
    code = solution if solution is not None else (completion or "")
    program = solution if solution is not None else problem.solution(completion or "")
    if not code.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if mode == "command" and raw is not None and (problem_format := _format_problem(raw)):
        return problem_format  # (samples files without the raw text are not format-checked)
    if _over_generated(problem, mode, code):
        return "over_generation"
    if problem.entry_point and not problem.completion_is_program:
        expected, found = _parameters(problem.canonical_solution, problem.entry_point), None
        if _parses(program):
            found = _parameters(program, problem.entry_point)
            if found is None or (expected is not None and found != expected):
                return "signature_change"
    if not _parses(program):
        return "syntax_error"
    status, detail = verdict.get("status", ""), str(verdict.get("detail") or "")
    if status in ("timeout", "memory"):
        return status
    if status == "failed":
        return "wrong_answer"
    if detail.startswith(("SyntaxError", "IndentationError", "TabError")):
        return "syntax_error"
    if match := _EXCEPTION.match(detail):
        return f"runtime_error:{match.group(1).rsplit('.', 1)[-1]}"
    return "runtime_error:crashed"


def label_failures(problems: Sequence[Problem], mode: str, samples: Iterable[dict[str, Any]],
                   verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``verdicts`` with a ``failure`` field each (None for passed samples), matched to their
    samples by (task_id, index)."""
    by_task = {p.task_id: p for p in problems}
    by_key = {(s["task_id"], s["index"]): s for s in samples}
    labelled = []
    for v in verdicts:
        s = by_key.get((v["task_id"], v["sample_index"]), {})
        problem = by_task.get(v["task_id"])
        failure = None
        if problem is not None:
            failure = classify(problem, mode, v, s.get("raw"), s.get("completion"), s.get("solution"),
                               s.get("finish_reason"))
        labelled.append({**v, "failure": failure})
    return labelled


def failure_counts(verdicts: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Failed samples per benchmark and class (``runtime_error:<T>`` kept apart by type)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        if not v.get("passed") and v.get("failure"):
            counts[v.get("benchmark") or ""][v["failure"]] += 1
    return {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}
