"""Benchmarks in other languages: HumanEval-X (shipped) and MultiPL-E prompt files (user paths).

HumanEval-X (CodeGeeX, THUDM): the 164 HumanEval problems hand-translated to C++, Go, Java,
JavaScript and Rust, each with a canonical solution and a test program.  Programs are put
together as CodeGeeX's evaluation does (``codegeex/benchmark/execution.py`` and
``utils.py``): C++ gets its helper includes first; Go's solution loses its own imports and
gains the helper packages it uses (``Problem.test_program``), then ``go test``; Java's test is
``public class Main``; JavaScript runs under node; Rust is ``fn main`` + declaration + code +
its ``#[cfg(test)]`` module, built with ``rustc --test`` against rand/regex/md5.

MultiPL-E (``humaneval-<lang>-reworded.jsonl``; fields ``name``, ``language``, ``prompt``,
``tests``, ``stop_tokens``): the program is ``prompt + completion + tests`` (its tests start
by closing the function), completions stop at the file's own stop tokens.  It ships no
canonical solutions, so it has no canonical check.
"""

from __future__ import annotations

import re
from typing import Any

from codealign.tasks.files import parse_jsonl
from codealign.tasks.problems.datafiles import DataFileError, read_user_file
from codealign.tasks.problems.problem import Problem
from codealign.tasks.sandbox.toolchains import (
    GO_HELPER_PACKAGES,
    LANGUAGE_NAMES,
    canonical_language,
)

HUMANEVAL_X_LANGUAGES = ("cpp", "go", "java", "js", "rust")
HUMANEVAL_X_FILES = {lang: f"humaneval_{lang}.jsonl.gz" for lang in HUMANEVAL_X_LANGUAGES}
# CodeGeeX's IMPORT_HELPER["cpp"], with the includes before ``using namespace std``.
CPP_HEADER = "\n".join([
    "#include<stdlib.h>", "#include<algorithm>", "#include<cmath>", "#include<math.h>", "#include<numeric>",
    "#include<stdio.h>", "#include<vector>", "#include<set>", "#include<map>", "#include<queue>", "#include<stack>",
    "#include<list>", "#include<deque>", "#include<boost/any.hpp>", "#include<string>", "#include<climits>",
    "#include<cstring>", "#include<iostream>", "#include<sstream>", "#include<fstream>", "using namespace std;",
]) + "\n"
RUST_MAIN = "\nfn main(){ \n } \n"
# Flow mode on HumanEval-X: the function ends at the first closing brace at column 0 (the
# method's class, for Java); the brace is a stop, so it is put back after the completion.
HUMANEVAL_X_STOPS = ("\n}",)
FENCES = {"cpp": "cpp", "go": "go", "java": "java", "js": "javascript", "rust": "rust"}

_ENTRY = {
    "cpp": re.compile(r"(\w+)\s*\([^()]*\)\s*\{\s*$"),
    "go": re.compile(r"^func\s+(\w+)\s*\(", re.MULTILINE),
    "java": re.compile(r"public\s+[\w<>\[\], ]+?\s+(\w+)\s*\([^()]*\)\s*(?:throws\s+[\w., ]+)?\{\s*$"),
    "js": re.compile(r"(?:const\s+(\w+)\s*=|function\s+(\w+)\s*\()"),
    "rust": re.compile(r"^\s*(?:pub\s+)?fn\s+(\w+)\s*[<(]", re.MULTILINE),
}


# Canonical solutions in the HumanEval-X files that cannot pass their own tests (CodeGeeX's
# harness fails them too), with the reason; `codealign demo` lists them, and the canonical test
# expects exactly these to fail.
KNOWN_CANONICAL_FAILURES = {
    "JavaScript/112": "the canonical solution returns `(z, false)` (JavaScript's comma operator: only the "
                      "boolean) where the tests expect the pair [string, boolean]",
    "JavaScript/155": "the canonical solution counts no digit for 0 (`while (num > 0)`), the tests expect "
                      "evenOddCount(0) to be [1, 0]",
    "Rust/50": "its test calls `rng.gen_range(low, high)`, the API of rand before 0.8; the Rust crates here "
               "are Debian's rand 0.8, whose gen_range takes a range (E0277 at compile time)",
}


def entry_point_of(language: str, code: str) -> str:
    """The function a prompt asks for: the last one declared in it."""
    found = [m for m in _ENTRY[language].finditer(code.rstrip() if language in ("cpp", "java") else code)]
    names = [next(g for g in m.groups() if g) for m in found if m.group(0) and m.group(0).strip() != "fn main"]
    names = [n for n in names if n != "main"]
    return names[-1] if names else ""


def instruction_for(language: str, prompt: str, entry_point: str) -> str:
    """A Command-mode instruction: the prompt as a specification, in the language's fence."""
    return (f"Write a {LANGUAGE_NAMES[language]} function `{entry_point}` that satisfies this specification:\n\n"
            f"```{FENCES[language]}\n{prompt.strip()}\n```")


def humaneval_x_problem(language: str, rec: dict[str, Any]) -> Problem:
    """One HumanEval-X record as a problem (the benchmark is ``humaneval-x-<language>``)."""
    setup, prompt, metadata = "", rec["prompt"], {}
    if language == "cpp":
        setup = CPP_HEADER
    elif language == "go":
        setup = rec["test_setup"] + "\n"
        metadata["go_helper_packages"] = list(GO_HELPER_PACKAGES)
    elif language == "rust":
        setup = RUST_MAIN
        prompt = rec["prompt"] + rec["declaration"]
    entry = entry_point_of(language, rec.get("declaration") or rec["prompt"])
    return Problem(
        benchmark=f"humaneval-x-{language}",
        task_id=rec["task_id"],
        prompt=prompt,
        instruction=instruction_for(language, prompt, entry),
        entry_point=entry,
        canonical_completion=rec["canonical_solution"],
        test_setup=setup,
        test=rec["test"],
        language=language,
        stop_tokens=HUMANEVAL_X_STOPS,
        metadata={**metadata, "toolchain": {"rust_test_harness": True, "java_main": "Main"},
                  "completion_end": "\n}\n"},
    )


# ---------------------------------------------------------------------------- MultiPL-E

MULTIPL_E_FIELDS = {"name": str, "language": str, "prompt": str, "tests": str, "stop_tokens": list}


def load_multipl_e(path: str, name: str | None = None) -> list[Problem]:
    """A MultiPL-E prompt file (``humaneval-<lang>-reworded.jsonl``, optionally gzipped) as
    problems of benchmark ``name`` (``multipl-e:PATH``); every record is checked, and a bad one
    is a ``DataFileError`` naming the file, line and field."""
    raw = read_user_file(path, "multipl-e")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text ({exc})") from exc
    problems: list[Problem] = []
    language = None
    for at, rec in parse_jsonl(text, str(path), DataFileError):
        for field, kind in MULTIPL_E_FIELDS.items():
            if field not in rec:
                raise DataFileError(f"{at}: field {field!r} missing")
            if not isinstance(rec[field], kind):
                raise DataFileError(f"{at}: field {field!r} should be {kind.__name__}, "
                                      f"got {type(rec[field]).__name__}")
        if not all(isinstance(t, str) for t in rec["stop_tokens"]):
            raise DataFileError(f"{at}: field 'stop_tokens' should be a list of strings")
        try:
            lang = canonical_language(rec["language"])
        except ValueError as exc:
            raise DataFileError(f"{at}: field 'language': {exc}") from None
        if language is not None and lang != language:
            raise DataFileError(f"{at}: field 'language' is {rec['language']!r}, but earlier "
                                  f"records are {language!r} (one language per file)")
        language = lang
        entry = entry_point_of(lang, rec["prompt"])
        java_main = "Problem"
        if lang == "java" and (m := re.search(r"^class\s+(\w+)", rec["prompt"], re.MULTILINE)):
            java_main = m.group(1)
        problems.append(Problem(
            benchmark=name or f"multipl-e:{path}",
            task_id=rec["name"],
            prompt=rec["prompt"],
            instruction=instruction_for(lang, rec["prompt"], entry),
            entry_point=entry,
            canonical_completion="",
            test=rec["tests"],
            language=lang,
            stop_tokens=tuple(rec["stop_tokens"]),
            metadata={"toolchain": {"rust_test_harness": False, "java_main": java_main}, "source": str(path),
                      "has_canonical": False},
        ))
    if not problems:
        raise DataFileError(f"{path}: no records")
    return problems
