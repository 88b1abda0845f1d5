"""SelfCodeAlign's stages, run with the model being aligned: seed snippet → concepts →
instruction → response **plus the model's own tests** (Wei et al. 2024).

Each stage is one prompt built from a template file in ``templates/self_align/`` (the user
turn), with optional few-shot demonstrations as earlier turns, through the model's chat
template (or the plain template of a base model).  Parsing the answers is here too, so what a
stage asks and how its answer is read sit side by side.  Records made on this path say their
tests were self-written (``tests_origin = "self"``).
"""

from __future__ import annotations

import ast
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from codealign.tasks.files import InputError, read_jsonl
from codealign.tasks.generation.postprocess import extract_code_block
from codealign.tasks.generation.prompts import TokenizerLike, dialogue_prompt

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "self_align"
Stage = Literal["concepts", "instruction", "response"]
STAGES: tuple[Stage, ...] = ("concepts", "instruction", "response")
# The placeholder each stage's template fills: what the stage reads.
READS: dict[Stage, str] = {"concepts": "seed", "instruction": "concepts", "response": "instruction"}


@dataclass(frozen=True)
class StageShot:
    """A demonstration of one stage: what it was given and the answer it should give."""

    stage: Stage
    given: str
    answer: str


def user_message(stage: Stage, given: str, template_dir: Path = TEMPLATE_DIR) -> str:
    """The stage's template with its one placeholder filled."""
    text = (template_dir / f"{stage}.txt").read_text(encoding="utf-8")
    return string.Template(text).substitute({READS[stage]: given.strip("\n")}).rstrip("\n")


def stage_prompt(tokenizer: TokenizerLike, stage: Stage, given: str, shots: list[StageShot] = (),
                 template_dir: Path = TEMPLATE_DIR) -> str:
    """The exact text sent to the model for one stage."""
    turns = [(user_message(s.stage, s.given, template_dir), s.answer) for s in shots if s.stage == stage]
    return dialogue_prompt(tokenizer, turns, user_message(stage, given, template_dir))


def load_stage_shots(path: str | Path) -> list[StageShot]:
    """Demonstrations from a JSONL file of ``{"stage", "given", "answer"}``."""
    shots = []
    for at, rec in read_jsonl(path, "self-align shots file", required=("stage", "given", "answer")):
        if rec["stage"] not in STAGES:
            raise InputError(f"{at}: stage {rec['stage']!r} is not one of {', '.join(STAGES)}")
        shots.append(StageShot(rec["stage"], str(rec["given"]), str(rec["answer"])))
    return shots


def parse_concepts(text: str) -> str:
    """The concepts line (the first non-empty line of the answer)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def parse_instruction(text: str) -> str:
    """The task, up to a following template block if the model went on."""
    return text.split("### Instruction:")[0].strip()


def split_self_tests(answer: str) -> tuple[str, list[str]]:
    """A "solve and test" answer as (solution, the model's top-level assert statements).

    Asserts inside an ``if __name__ == "__main__":`` block count too (the block is dropped, as
    the sandbox would never run it).  Code that does not parse is split line by line."""
    code = extract_code_block(answer).strip("\n") + "\n"
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return _split_lines(code)
    lines = code.splitlines(keepends=True)
    dropped: set[int] = set()
    tests: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            tests.append(ast.get_source_segment(code, node) or ast.unparse(node))
        elif _is_main_block(node):
            tests += [ast.get_source_segment(code, n) or ast.unparse(n) for n in node.body if isinstance(n, ast.Assert)]
        else:
            continue
        dropped.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
    solution = "".join(line for i, line in enumerate(lines) if i not in dropped).rstrip("\n") + "\n"
    return solution, tests


def _split_lines(code: str) -> tuple[str, list[str]]:
    """For code that does not parse: lines at column 0 starting with ``assert`` are the tests
    (each judged on its own, a broken one fails alone), the rest is the solution."""
    tests = [line.rstrip() for line in code.splitlines() if line.startswith("assert")]
    solution = "".join(line for line in code.splitlines(keepends=True) if not line.startswith("assert"))
    return solution.rstrip("\n") + "\n", tests


def _is_main_block(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def entry_point_of(solution: str) -> str:
    """The first top-level function a solution defines ("" if none or it does not parse)."""
    try:
        tree = ast.parse(solution)
    except SyntaxError:
        return ""
    return next((n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), "")
