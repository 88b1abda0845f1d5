"""Why a sample failed: one failure class per failed sample, stored with its verdict.

pass@k says how often a model is right; the papers also ask *how* it is wrong (paper 001
breaks the instruction-tuning tax down this way).  A verdict's status says what the sandbox saw
(failed, error, timeout, memory); the class adds what the sample itself shows, from the raw
model text, the extracted code and the problem:

=====================  ====================================================================
class                  when (first that applies, in this order)
=====================  ====================================================================
``prompt_too_long``    the prompt left no room in the model's context: nothing was generated
``empty``              no code at all (nothing generated, or nothing extractable)
``truncated``          generation stopped at the token limit (``finish_reason == "length"``)
``format:no_code``     Command mode: the answer has no fenced code block (prose, or bare code)
``format:language``    Command mode: its code block is tagged with another language
``over_generation``    the executed code carries more than the answer: Flow mode re-emits the
                       prompt's function; infilling repeats the suffix's first lines; or the
                       code brings tests or a ``__main__`` block of its own
``signature_change``   the entry point is missing, or takes other parameters than the prompt's
``syntax_error``       the program does not parse
``compile_error``      another language's program does not compile (syntax or types)
``timeout``            a CPU or wall-clock limit was hit
``memory``             the memory limit was hit
``not_plain_data``     the function returned a value that is not plain data (an object whose
                       ``__eq__`` lies, a generator...): the judge compares plain values only
``ended_early``        the program ended before answering every call of the tests (an early
                       ``exit``, ``os._exit``, a crash outside an exception)
``runtime_error:<T>``  an exception of type ``T`` before the tests could judge (``crashed``
                       when the process died without one)
``wrong_answer``       the tests ran and an assertion or an output comparison failed
=====================  ====================================================================

Plain Python (``ast``), no sandbox: classification reads text, never runs it.  Programs in
other languages (HumanEval-X, MultiPL-E) are classed from their verdict (compile error,
timeout, memory, assertion, runtime error by exception/panic type) after the format checks.
"""

from __future__ import annotations

import ast
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from codealign.tasks.generation.sampling import PROMPT_TOO_LONG
from codealign.tasks.problems.problem import Problem

CLASSES = ("prompt_too_long", "empty", "truncated", "format:no_code", "format:language", "over_generation",
           "signature_change", "syntax_error", "compile_error", "timeout", "memory", "not_plain_data", "ended_early",
           "runtime_error",
           "wrong_answer")
# The judge's own names for a failure (``Verdict.flag``): the reward hacks it caught.
JUDGE_FLAGS = ("not_plain_data", "ended_early")
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


def format_problem(raw: str, language: str = "python") -> str | None:
    """Command mode's expected shape is a fenced block in the problem's language:
    ``format:no_code`` when the answer has no fence, ``format:language`` when no block is tagged
    with that language (or untagged), else None.  Shared with
    :mod:`codealign.tasks.evaluation.generation_fidelity`."""
    from codealign.tasks.generation.postprocess import FENCE_TAGS

    tags = _FENCE.findall(raw)
    if not tags:
        return "format:no_code"
    openings = tags[::2]  # fences alternate: opening (tagged) and closing
    accepted = _PYTHON_TAGS if language == "python" else {"", *FENCE_TAGS.get(language, (language,))}
    if not any(tag.lower() in accepted for tag in openings):
        return "format:language"
    return None


def repeats_suffix(problem: Problem, middle: str) -> bool:
    """An infilled middle runs into its suffix: the suffix's first two non-blank whole lines
    stand consecutively among the middle's lines (its first line completed by the prompt's
    unfinished last line), compared with their indentation (trailing whitespace ignored).

    Whole lines with indentation, because a short suffix line (``return False``) often stands
    in a correct middle at another depth: compared stripped, 40 of the 7,522 HumanEval
    infilling reference middles (those with a suffix) were flagged, compared this way 5 (a
    one-line suffix that the middle legitimately holds).  A suffix that begins mid-line (the
    reference middle does not end a line) is looked for from its second line: its first is a
    fragment."""
    suffix_lines = problem.suffix.splitlines()
    reference = problem.prompt + problem.canonical_completion
    if reference and not reference.endswith("\n"):
        suffix_lines = suffix_lines[1:]
    suffix = [line.rstrip() for line in suffix_lines if line.strip()][:2]
    text = problem.prompt.rsplit("\n", 1)[-1] + middle
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return bool(suffix) and any(lines[i:i + len(suffix)] == suffix for i in range(len(lines)))


def reemits_function(problem: Problem, text: str) -> bool:
    """Flow-mode text writes the prompt's function again (a ``def <entry_point>(`` line)."""
    return bool(re.search(rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", text, re.MULTILINE))


def _over_generated(problem: Problem, mode: str, code: str) -> bool:
    """The executed code carries more than the answer: the prompt's function again (Flow mode),
    the suffix's first lines (infilling), or tests / a ``__main__`` block of its own."""
    if problem.suffix:
        if repeats_suffix(problem, code):
            return True
    elif mode == "flow" and not problem.completion_is_program and reemits_function(problem, code):
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
    if finish_reason == PROMPT_TOO_LONG:
        return "prompt_too_long"
    if not code.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if mode == "command" and raw is not None and (problem_format := format_problem(raw, problem.language)):
        return problem_format  # (samples files without the raw text are not format-checked)
    if problem.language != "python":
        return _compiled_failure(verdict)
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
    if verdict.get("flag") in JUDGE_FLAGS:
        return str(verdict["flag"])
    if status == "failed":
        return "wrong_answer"
    if detail.startswith(("SyntaxError", "IndentationError", "TabError")):
        return "syntax_error"
    if match := _EXCEPTION.match(detail):
        return f"runtime_error:{match.group(1).rsplit('.', 1)[-1]}"
    return "runtime_error:crashed"


def _compiled_failure(verdict: dict[str, Any]) -> str:
    """Another language's failure, from what the compiler and the run reported (the code itself
    is not parsed here)."""
    status, detail = verdict.get("status", ""), str(verdict.get("detail") or "")
    if detail.startswith("CompileError"):
        return "compile_error"
    if status in ("timeout", "memory"):
        return status
    if status == "failed":
        return "wrong_answer"
    if detail.startswith("Panic:"):
        return "runtime_error:panic"
    if match := _EXCEPTION.match(detail):
        return f"runtime_error:{match.group(1).rsplit('.', 1)[-1]}"
    return "runtime_error:crashed"


def label_failures(problems: Sequence[Problem], mode: str, samples: Iterable[dict[str, Any]],
                   verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``verdicts`` with a ``failure`` field each (None for passed samples), matched to their
    samples by (task_id, index)."""
    labelled = []
    for v, s, problem in matched(problems, samples, verdicts):
        failure = None
        if problem is not None:
            failure = classify(problem, mode, v, s.get("raw"), s.get("completion"), s.get("solution"),
                               s.get("finish_reason"))
        labelled.append({**v, "failure": failure})
    return labelled


def matched(problems: Sequence[Problem], samples: Iterable[dict[str, Any]], verdicts: Iterable[dict[str, Any]],
            ) -> Iterator[tuple[dict[str, Any], dict[str, Any], Problem | None]]:
    """Each verdict with its sample record (matched by (task_id, index); ``{}`` when missing) and
    its problem (None when unknown): what every per-sample label reads."""
    by_task = {p.task_id: p for p in problems}
    by_key = {(s["task_id"], s["index"]): s for s in samples}
    for v in verdicts:
        yield v, by_key.get((v["task_id"], v["sample_index"]), {}), by_task.get(v["task_id"])


def failure_counts(verdicts: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Failed samples per benchmark and class (``runtime_error:<T>`` kept apart by type)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        if not v.get("passed") and v.get("failure"):
            counts[v.get("benchmark") or ""][v["failure"]] += 1
    return {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}
