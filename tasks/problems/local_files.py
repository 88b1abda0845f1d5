"""Benchmarks from local files: EvoEval, EvalPerf and CODAL-Bench in their published formats.

Their data cannot be fetched here, so a user names the file: the benchmark names
``evoeval:PATH``, ``evalperf:PATH`` and ``codal:PATH`` are accepted wherever a benchmark is
named (``codealign evaluate --benchmarks evoeval:/data/EvoEval_difficult.jsonl,humaneval+``,
``codealign exec --benchmark ...``, YAML configs), through a small hook in
:mod:`codealign.tasks.problems.registry`.  The whole name is the benchmark's name in samples, verdicts
and scores.  A relative PATH is resolved against the current directory of the process that
loads it, so give absolute paths to runs whose work happens on Ray workers.  The file is read
once per process (the registry's cache).

Every loader validates the file and raises :class:`~codealign.tasks.problems.registry.DataFileError`
naming ``FILE:LINE`` (``FILE: row N`` for Parquet) and the field that is wrong.  Files may be
gzip-compressed (detected by content).

Formats (what was read to establish them)
-----------------------------------------

**EvoEval** (Xia et al., COLM 2024; github.com/evo-eval/evoeval ``evoeval/data.py``,
``evoeval/evaluate.py``, ``evoeval/eval_test/__init__.py`` @ 2ee7645, README "Problem
Structure").  The release files ``EvoEval_<variant>.jsonl(.gz)`` (variants difficult, creative,
subtle, combine, tool_use, verbose, concise; github.com/evo-eval/evoeval_release, also
hf.co/datasets/evoeval/EvoEval_<variant> ``test.jsonl``) are JSONL, one task per line:

* ``task_id`` (str, ``EvoEval/N``; ``HumanEval/N`` in verbose/concise), ``entry_point`` (str),
  ``prompt`` (str, signature + docstring), ``canonical_solution`` (str; run as
  ``prompt + "\\n" + canonical_solution``);
* ``inputs``: list of str, each the source of one call's argument list (EvoEval evaluates
  ``eval(f"[{s}]")``; here it is parsed as literals, with a few pure constructors such as
  ``float('inf')`` or ``list(range(9))`` allowed, never with ``eval``);
* verbose/concise instead carry evalplus' raw ``base_input`` / ``plus_input`` (lists of
  argument lists);
* optional: ``parent`` (the HumanEval task evolved from), ``main`` / ``helpers``
  (tool_use), ``atol`` (number; EvoEval itself compares floats with ``atol=1e-6``).

Also accepted: a JSON object keyed by task_id (what ``json.dump(get_evo_eval(name))`` writes).
EvoEval tasks are judged like HumanEval+: differential testing against the canonical
solution's outputs (computed once in the sandbox), one group of inputs.  EvoEval's
hand-written oracles for a few tasks (difficult EvoEval/10, /32; creative EvoEval/26, /30, /69;
subtle EvoEval/32) are not reproduced: those tasks are compared exactly (stricter; flagged in
``metadata["evoeval_special_oracle"]``); ``find_zero`` keeps evalplus' root check.

**EvalPerf** (Liu et al., "Evaluating Language Models for Efficient Code Generation", COLM
2024; github.com/evalplus/evalplus ``evalplus/evalperf.py``, ``evalplus/data/__init__.py``
``get_evalperf_data``; github.com/evalplus/evalperf_release README and
``evalperf-20240328.jsonl.gz``; hf.co/datasets/evalplus/evalperf, Parquet, split ``test``).
One task per record:

* ``task_id`` (str, a HumanEval+ or MBPP+ id: ``HumanEval/N`` / ``Mbpp/N``);
* ``reference`` (list of str: representative solutions, slow to fast);
* ``scores`` (list of numbers, 0-100, one per reference: the differential performance score a
  solution as fast as that reference earns);
* ``pe_input``: the performance-exercising input(s) — a list of argument lists, stored as a
  JSON string on the Hugging Face dataset (``json.loads(d["pe_input"])``) and accepted as a
  list too; EvalPerf profiles ``pe_input[0]`` (MBPP ones are type-restored as MBPP+ inputs);
* optional: ``entry_point`` (checked against the HumanEval+/MBPP+ task), ``prompt``.

EvalPerf has no correctness tests of its own: evalplus checks a sample against the task's
HumanEval+/MBPP+ tests before profiling it, and generates from their prompts.  So an EvalPerf
problem here *is* the shipped HumanEval+ v0.1.10 / MBPP+ v0.2.0 problem (prompt, differential
tests) renamed to this benchmark, with ``metadata["reference"]``, ``["scores"]`` and
``["pe_input"]`` (the JSON text; :func:`evalperf_pe_inputs` decodes it) for efficiency scoring
later.  Its pass@k is correctness on those tasks; efficiency (DPS) is not computed yet.

**CODAL-Bench** (Weyssow et al., CodeUltraFeedback, arXiv 2403.09032; paper 003 §3.4.2;
hf.co/datasets/coseal/codal-bench ``data/test-00000-of-00001.parquet``, 500 rows, dataset
card; github.com/martin-wey/CodeUltraFeedback ``src/evaluate/generate_responses.py``,
``generate_ratings.py``, ``src/templates/principles.py``).  Columns: ``instruction`` (str),
``preference`` (one of ``instruction-following``, ``readability``, ``complexity``, ``style``,
``explanation``), and reference responses ``gpt-3.5-turbo_response``,
``gpt-4-turbo_response``, ``claude-3-sonnet-20240229_response`` (str).  There is no task id:
rows become ``CODAL/<row>`` (0-based, file order).  Accepted as the Parquet file or its JSONL /
JSON-array export (``Dataset.to_json``).

CODAL measures non-functional quality: an LLM judge rates each response 1-10 for its
preference against a reference response (single-answer grading), averaged per dimension.  Its
problems (:class:`JudgedProblem`) have an ``instruction`` for Command-mode sampling and no
executable tests; executing them refuses with :class:`JudgedBenchmarkError`, so
``codealign evaluate`` writes the sampled responses (``generations.jsonl``) and then stops with
that message instead of reporting a meaningless pass@k.  Judging is not wired into evaluate;
``metadata["judge_dimension"]`` names the rubric in ``tasks/preferences/templates/judge/``.
CodeUltraFeedback's generator prefixes each instruction with one of ten GPT-4-written
principle sentences for the preference; they are not shipped here, so prompts are the bare
instruction.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codealign.tasks.errors import CodealignError
from codealign.tasks.files import parse_jsonl
from codealign.tasks.problems.datafiles import DataFileError, read_user_file
from codealign.tasks.problems.mbpp_inputs import deserialize_mbpp_plus_inputs
from codealign.tasks.problems.problem import (
    DifferentialTests,
    Problem,
    instruction_from_prompt,
)

KINDS = ("evoeval", "evalperf", "codal", "multipl-e")
EVOEVAL_VARIANTS = ("difficult", "creative", "subtle", "combine", "tool_use", "verbose", "concise")
# Tasks EvoEval judges with a hand-written oracle (evoeval/eval_test/__init__.py unsafe_execute).
EVOEVAL_SPECIAL_ORACLES = {
    "difficult": {"EvoEval/10", "EvoEval/32"},
    "creative": {"EvoEval/26", "EvoEval/30", "EvoEval/69"},
    "subtle": {"EvoEval/32"},
}
CODAL_PREFERENCES = ("instruction-following", "readability", "complexity", "style", "explanation")


class JudgedBenchmarkError(CodealignError, ValueError):
    """A benchmark scored by an LLM judge was sent to be executed."""


@dataclass(frozen=True)
class JudgedProblem(Problem):
    """A problem with no executable tests: its responses are rated by an LLM judge (CODAL)."""

    def test_program(self, solution: str) -> str:
        raise JudgedBenchmarkError(
            f"{self.benchmark} {self.task_id}: CODAL-Bench is scored by an LLM judge (a 1-10 rating of "
            f"the response for its coding preference {self.metadata.get('preference')!r}, against a "
            f"reference response), not by running tests, so the sandbox cannot score it. Sample it in "
            f"Command mode and rate the responses (generations.jsonl) with a judge; see "
            f"tasks/problems/local_files.py."
        )


# ---------------------------------------------------------------------------- names


def parse_name(name: str) -> tuple[str, str] | None:
    """``("evoeval", PATH)`` for ``"evoeval:PATH"`` etc.; None for any other name."""
    kind, sep, path = name.partition(":")
    if sep and kind in KINDS and path.strip():
        return kind, path
    return None


def is_local_benchmark(name: str) -> bool:
    return parse_name(name) is not None


def local_benchmark_digest(name: str) -> str | None:
    """The sha256 of the file a ``kind:PATH`` benchmark is read from (None for shipped
    benchmarks, whose data files are verified against fixed digests): results computed from
    one version of a user's file are not reused for another."""
    parsed = parse_name(name)
    if parsed is None:
        return None
    return hashlib.sha256(read_user_file(parsed[1], parsed[0])).hexdigest()


# ---------------------------------------------------------------------------- reading records


def _records(path: str, kind: str) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each record of a JSONL, JSON (array, or object keyed by task id)
    or Parquet file; ``where`` is ``FILE:LINE`` (``FILE: row N`` for Parquet)."""
    raw = read_user_file(path, kind)
    if raw[:4] == b"PAR1":
        yield from _parquet_records(path, raw)
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text, gzip or Parquet ({exc})") from None
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".json") or (not name.endswith(".jsonl") and text.lstrip()[:1] == "["):
        yield from _json_records(path, text)
        return
    yield from parse_jsonl(text, str(path), DataFileError)


def _json_records(path: str, text: str) -> Iterator[tuple[str, Any]]:
    """Records of a whole-file JSON array or object (keyed by task id, which fills in a
    missing ``task_id``), each with the line it starts on."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(whole, (list, dict)):
        raise DataFileError(f"{path}:1: expected a JSON array of records or an object keyed by task id, "
                     f"got {type(whole).__name__}")
    decoder = json.JSONDecoder()
    i = _skip_ws(text, 0) + 1
    for _index in range(len(whole)):
        i = _skip_ws(text, i)
        key = None
        if isinstance(whole, dict):
            key, i = decoder.raw_decode(text, i)
            i = _skip_ws(text, i) + 1  # ':'
            i = _skip_ws(text, i)
        start = i
        value, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, i) + 1  # ',' or the closing bracket
        where = f"{path}:{text.count(chr(10), 0, start) + 1}"
        if key is not None and isinstance(value, dict):
            if "task_id" not in value:
                value = {"task_id": key, **value}
            elif value["task_id"] != key:
                raise DataFileError(f"{where}: field 'task_id' is {value['task_id']!r} but the record is keyed {key!r}")
        yield where, value


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _parquet_records(path: str, raw: bytes) -> Iterator[tuple[str, Any]]:
    import io

    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:
        raise DataFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    for row, record in enumerate(table.to_pylist()):
        yield f"{path}: row {row}", record


def _require(record: Any, where: str, name: str, types: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(record, dict):
        raise DataFileError(f"{where}: expected a JSON object (one task), got {type(record).__name__}")
    if name not in record or record[name] is None:
        raise DataFileError(f"{where}: missing field {name!r} ({what})")
    return _typed(record[name], where, name, types, what)


def _typed(value: Any, where: str, name: str, types: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise DataFileError(f"{where}: field {name!r} must be {what}, got {type(value).__name__}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _string_list(record: dict[str, Any], where: str, name: str, what: str) -> list[str]:
    values = _require(record, where, name, list, what)
    for i, v in enumerate(values):
        _typed(v, where, f"{name}[{i}]", str, "a string")
    return values


def _check_unique(seen: set[str], task_id: str, where: str) -> None:
    if task_id in seen:
        raise DataFileError(f"{where}: duplicate task_id {task_id!r}")
    seen.add(task_id)


def _nonempty(problems: list[Problem], path: str, kind: str) -> list[Problem]:
    if not problems:
        raise DataFileError(f"{path}: no tasks in this {kind} file")
    return problems


# ---------------------------------------------------------------------------- EvoEval


def evoeval_variant(path: str) -> str | None:
    """The EvoEval variant a release file is named for (``EvoEval_difficult.jsonl`` -> difficult)."""
    match = re.search(r"EvoEval_(" + "|".join(EVOEVAL_VARIANTS) + r")\b", Path(path).name)
    return match.group(1) if match else None


def load_evoeval(path: str, name: str | None = None) -> list[Problem]:
    name = name or f"evoeval:{path}"
    variant = evoeval_variant(path)
    special = EVOEVAL_SPECIAL_ORACLES.get(variant or "", set())
    problems: list[Problem] = []
    seen: set[str] = set()
    for where, rec in _records(path, "evoeval"):
        task_id = _require(rec, where, "task_id", str, "a string such as 'EvoEval/0'")
        _check_unique(seen, task_id, where)
        prompt = _require(rec, where, "prompt", str, "the signature + docstring")
        entry_point = _require(rec, where, "entry_point", str, "the function's name")
        if not entry_point.isidentifier():
            raise DataFileError(f"{where}: field 'entry_point' must be a Python name, got {entry_point!r}")
        canonical = _require(rec, where, "canonical_solution", str, "the ground-truth code")
        if rec.get("inputs") is not None:
            sources = _string_list(rec, where, "inputs", "a list of argument-list strings")
            base = [parse_arguments(s, where, f"inputs[{i}]") for i, s in enumerate(sources)]
            plus: list[Any] = []
        elif rec.get("base_input") is not None:
            base = _argument_lists(rec, where, "base_input")
            plus = _argument_lists(rec, where, "plus_input") if rec.get("plus_input") is not None else []
        else:
            raise DataFileError(f"{where}: missing field 'inputs' (a list of argument-list strings; "
                         f"verbose/concise files carry 'base_input' instead)")
        if not base and not plus:
            raise DataFileError(f"{where}: field 'inputs' is empty; a task needs at least one test input")
        atol = float(_typed(rec.get("atol", 0), where, "atol", (int, float), "a number"))
        if atol < 0 or math.isnan(atol):
            raise DataFileError(f"{where}: field 'atol' must be >= 0, got {atol}")
        if entry_point == "find_zero" and atol == 0:
            atol = 1e-6  # EvoEval's oracle for HumanEval/32: |poly(xs, root)| <= 1e-6
        problems.append(
            Problem(
                benchmark=name,
                task_id=task_id,
                prompt=prompt,
                instruction=instruction_from_prompt(prompt, entry_point),
                entry_point=entry_point,
                canonical_completion="\n" + canonical,
                differential=DifferentialTests(flavor="humaneval", base_inputs=base, plus_inputs=plus, atol=atol),
                metadata={
                    "source": "evoeval",
                    "variant": variant,
                    "where": where,
                    "parent": rec.get("parent"),
                    **{k: rec[k] for k in ("main", "helpers") if rec.get(k) is not None},
                    "evoeval_special_oracle": task_id in special,
                },
            )
        )
    return _nonempty(problems, path, "EvoEval")


def _argument_lists(rec: dict[str, Any], where: str, name: str) -> list[Any]:
    values = _require(rec, where, name, list, "a list of argument lists")
    for i, v in enumerate(values):
        _typed(v, where, f"{name}[{i}]", list, "an argument list")
    return values


def parse_arguments(source: str, where: str, field: str) -> list[Any]:
    """One EvoEval input (``"[1, 2], 3"``) as its argument list, without ``eval``: literals,
    arithmetic on them, and calls to a few pure constructors (``float('inf')``, ``list(range(5))``)."""
    text = f"[{source}]"
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        value = _SafeEval().visit(ast.parse(text, mode="eval").body)
    except SyntaxError as exc:
        raise DataFileError(f"{where}: field {field!r} is not Python argument syntax ({exc.msg}): "
                            f"{source[:80]!r}") from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise DataFileError(f"{where}: field {field!r} cannot be read as literal arguments ({exc}): "
                            f"{source[:80]!r}") from None
    return value


_SAFE_CALLS = {"float": float, "int": int, "str": str, "bool": bool, "complex": complex, "list": list,
               "tuple": tuple, "set": set, "frozenset": frozenset, "dict": dict, "range": range,
               "sorted": sorted, "abs": abs, "chr": chr, "ord": ord}
_MAX_ITEMS = 10_000_000


class _SafeEval(ast.NodeVisitor):
    """Literals, + - * / // % ** on them, and calls to :data:`_SAFE_CALLS` (no names, no
    attributes: nothing reaches a Python object that is not data)."""

    def generic_visit(self, node: ast.AST) -> Any:
        raise ValueError(f"{type(node).__name__} is not allowed")

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(e) for e in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return tuple(self.visit(e) for e in node.elts)

    def visit_Set(self, node: ast.Set) -> Any:
        return {self.visit(e) for e in node.elts}

    def visit_Dict(self, node: ast.Dict) -> Any:
        if any(k is None for k in node.keys):
            raise ValueError("** in a dict is not allowed")
        return {self.visit(k): self.visit(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        if isinstance(node.op, ast.Not):
            return not value
        raise ValueError(f"{type(node.op).__name__} is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.visit(node.left), self.visit(node.right)
        op = type(node.op)
        if op is ast.Mult:
            for seq, times in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple, bytes)) and isinstance(times, int)
                        and len(seq) * times > _MAX_ITEMS):
                    raise ValueError("sequence too large")
            return left * right
        if op is ast.Pow:
            if isinstance(right, int) and abs(right) > 4096:
                raise ValueError("exponent too large")
            return left**right
        ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Div: lambda a, b: a / b,
               ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}
        if op not in ops:
            raise ValueError(f"{op.__name__} is not allowed")
        return ops[op](left, right)

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in _SAFE_CALLS or node.keywords:
            raise ValueError("only calls such as float('inf') or list(range(3)) are allowed")
        args = [self.visit(a) for a in node.args]
        if node.func.id == "range" and len(range(*args)) > _MAX_ITEMS:
            raise ValueError("range too large")
        return _SAFE_CALLS[node.func.id](*args)


# ---------------------------------------------------------------------------- EvalPerf


def load_evalperf(path: str, name: str | None, shipped: Callable[[str], list[Problem]]) -> list[Problem]:
    """An EvalPerf file: its tasks are HumanEval+ / MBPP+ tasks (``shipped`` loads those, by
    benchmark name) with performance-exercising inputs and reference solutions."""
    name = name or f"evalperf:{path}"
    rows = []
    seen: set[str] = set()
    for where, rec in _records(path, "evalperf"):
        task_id = _require(rec, where, "task_id", str, "a HumanEval+ or MBPP+ task id")
        if not re.fullmatch(r"(HumanEval|Mbpp)/\d+", task_id):
            raise DataFileError(f"{where}: field 'task_id' must be a HumanEval+ or MBPP+ id such as 'HumanEval/10' "
                         f"or 'Mbpp/3', got {task_id!r}")
        _check_unique(seen, task_id, where)
        reference = _string_list(rec, where, "reference", "a list of reference solutions (slow to fast)")
        if not reference:
            raise DataFileError(f"{where}: field 'reference' is empty")
        scores = _require(rec, where, "scores", list, "a list of numbers, one per reference")
        for i, s in enumerate(scores):
            _typed(s, where, f"scores[{i}]", (int, float), "a number")
        if len(scores) != len(reference):
            raise DataFileError(f"{where}: field 'scores' has {len(scores)} numbers for {len(reference)} references")
        pe_raw = _require(rec, where, "pe_input", (str, list), "the performance-exercising inputs (JSON text or list)")
        try:
            pe = json.loads(pe_raw) if isinstance(pe_raw, str) else pe_raw
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{where}: field 'pe_input' is not valid JSON "
                                f"({exc.msg} at column {exc.colno})") from None
        if not isinstance(pe, list) or not pe or not all(isinstance(a, list) for a in pe):
            raise DataFileError(f"{where}: field 'pe_input' must be a non-empty list of argument lists")
        if task_id.startswith("Mbpp/"):
            try:
                deserialize_mbpp_plus_inputs(int(task_id.split("/")[1]), pe)
            except Exception as exc:  # noqa: BLE001 - any failure to restore types is bad data
                raise DataFileError(f"{where}: field 'pe_input' does not fit {task_id}'s argument types "
                                    f"({exc})") from None
        entry_point = rec.get("entry_point")
        if entry_point is not None:
            _typed(entry_point, where, "entry_point", str, "a string")
        pe_text = pe_raw if isinstance(pe_raw, str) else json.dumps(pe_raw)
        rows.append((where, task_id, reference, [float(s) for s in scores], pe_text, entry_point))
    if not rows:
        raise DataFileError(f"{path}: no tasks in this EvalPerf file")
    plus: dict[str, Problem] = {}
    for bench, prefix in (("humaneval+", "HumanEval/"), ("mbpp+", "Mbpp/")):
        if any(r[1].startswith(prefix) for r in rows):
            plus.update({p.task_id: p for p in shipped(bench)})
    problems = []
    for where, task_id, reference, scores, pe_text, entry_point in rows:
        base = plus.get(task_id)
        if base is None:
            raise DataFileError(f"{where}: task {task_id!r} is not in HumanEval+ v0.1.10 / MBPP+ v0.2.0, whose tests "
                         f"judge EvalPerf's correctness")
        if entry_point is not None and entry_point != base.entry_point:
            raise DataFileError(f"{where}: field 'entry_point' is {entry_point!r} "
                                f"but {task_id} defines {base.entry_point!r}")
        problems.append(replace(base, benchmark=name, metadata={
            **base.metadata, "source": "evalperf", "where": where, "correctness_from": base.benchmark,
            "reference": reference, "scores": scores, "pe_input": pe_text,
        }))
    return problems


def evalperf_pe_inputs(problem: Problem) -> list[list[Any]]:
    """An EvalPerf problem's performance-exercising inputs as argument lists (MBPP types
    restored); EvalPerf profiles the first."""
    inputs = json.loads(problem.metadata["pe_input"])
    if problem.task_id.startswith("Mbpp/"):
        return list(deserialize_mbpp_plus_inputs(int(problem.task_id.split("/")[1]), inputs))
    return inputs


# ---------------------------------------------------------------------------- CODAL-Bench


def load_codal(path: str, name: str | None = None) -> list[Problem]:
    name = name or f"codal:{path}"
    problems: list[Problem] = []
    seen: set[str] = set()
    for row, (where, rec) in enumerate(_records(path, "codal")):
        instruction = _require(rec, where, "instruction", str, "the coding instruction")
        if not instruction.strip():
            raise DataFileError(f"{where}: field 'instruction' is empty")
        preference = _require(rec, where, "preference", str, f"one of {', '.join(CODAL_PREFERENCES)}")
        if preference not in CODAL_PREFERENCES:
            raise DataFileError(f"{where}: field 'preference' must be one of {', '.join(CODAL_PREFERENCES)}, "
                         f"got {preference!r}")
        references = {}
        for key, value in rec.items():
            if key.endswith("_response") and value is not None:
                references[key.removesuffix("_response")] = _typed(value, where, key, str, "a string")
        task_id = rec.get("task_id") or f"CODAL/{row}"
        _typed(task_id, where, "task_id", str, "a string")
        _check_unique(seen, task_id, where)
        problems.append(
            JudgedProblem(
                benchmark=name,
                task_id=task_id,
                prompt="",
                instruction=instruction,
                entry_point="",
                canonical_completion="",
                completion_is_program=True,
                metadata={
                    "source": "codal",
                    "where": where,
                    "scoring": "llm-judge",
                    "preference": preference,
                    "judge_dimension": preference.replace("-", "_"),
                    "references": references,
                },
            )
        )
    return _nonempty(problems, path, "CODAL-Bench")
