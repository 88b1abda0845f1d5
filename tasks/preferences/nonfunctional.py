"""Non-functional scores of a response, per CODAL dimension, from static analysis (0-10, higher
is better), so non-functional preference pairs can be built without a judge model:

* ``readability`` — radon's maintainability index and descriptive names;
* ``style`` — ruff findings (pycodestyle, pyflakes, naming, bugbear, pyupgrade, simplify) per
  ten lines;
* ``complexity`` — radon's mean cyclomatic complexity (pairs break ties by measured CPU time:
  efficiency);
* ``instruction_following`` — defines the asked-for function, no prints/input, no stray
  top-level code;
* ``explanation`` — docstrings, comments, type hints.

The numbers are proxies, documented as such; the pair builder only prefers a response on a
dimension when the scores differ by a margin.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tempfile
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DIMENSIONS = ("instruction_following", "readability", "complexity", "style", "explanation")
RUFF_RULES = "E,W,F,N,B,UP,SIM"


@dataclass(frozen=True)
class StaticFacts:
    """What static analysis measured on one response."""

    code_lines: int
    comment_lines: int
    ruff_findings: int
    mean_complexity: float
    maintainability: float
    docstrings: int
    functions: int
    typed_ratio: float
    short_name_ratio: float
    defines_entry_point: bool
    side_effects: int  # print()/input() calls
    stray_statements: int  # top-level statements other than imports, defs, classes, constants


def analyze(codes: Sequence[str], entry_points: Sequence[str]) -> list[StaticFacts]:
    """Static facts for each code (ruff runs once for the whole batch)."""
    findings = ruff_findings(codes)
    return [_facts(code, entry, n) for code, entry, n in zip(codes, entry_points, findings)]


def ruff_findings(codes: Sequence[str]) -> list[int]:
    """Number of ruff findings per code (one ``ruff check`` over a temporary directory)."""
    if not codes:
        return []
    with tempfile.TemporaryDirectory(prefix="codealign-ruff-") as tmp:
        for i, code in enumerate(codes):
            Path(tmp, f"r{i}.py").write_text(code, encoding="utf-8")
        proc = subprocess.run(
            [_ruff(), "check", "--isolated", "--no-cache", "--exit-zero", "--output-format", "json",
             "--select", RUFF_RULES, "--line-length", "100", tmp],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ruff failed: {proc.stderr.strip()[:300]}")
        counts = [0] * len(codes)
        for finding in json.loads(proc.stdout or "[]"):
            counts[int(Path(finding["filename"]).stem[1:])] += 1
    return counts


def _ruff() -> str:
    from ruff.__main__ import find_ruff_bin

    return str(find_ruff_bin()) if callable(find_ruff_bin) else sys.executable


def _facts(code: str, entry_point: str, findings: int) -> StaticFacts:
    from radon.complexity import cc_visit
    from radon.metrics import mi_visit

    lines = [line for line in code.splitlines() if line.strip()]
    comments = _comment_lines(code)
    try:
        tree = ast.parse(code)
        blocks = cc_visit(code)
        mi = float(mi_visit(code, multi=True))
    except (SyntaxError, ValueError, RecursionError):
        return StaticFacts(len(lines), comments, findings, 0.0, 0.0, 0, 0, 0.0, 1.0, False, 0, len(lines))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    args = [a for f in functions for a in (*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs)
            if a.arg not in ("self", "cls")]
    typed = sum(a.annotation is not None for a in args) + sum(f.returns is not None for f in functions)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {a.arg for a in args}
    short = [n for n in names if len(n) <= 1 and n not in ("_",)]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    stray = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef,
                                                         ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                                                         ast.AnnAssign))
             and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return StaticFacts(
        code_lines=len(lines) - comments,
        comment_lines=comments,
        ruff_findings=findings,
        mean_complexity=sum(b.complexity for b in blocks) / len(blocks) if blocks else 1.0,
        maintainability=mi,
        docstrings=sum(ast.get_docstring(f) is not None for f in functions),
        functions=len(functions),
        typed_ratio=typed / (len(args) + len(functions)) if (args or functions) else 0.0,
        short_name_ratio=len(short) / len(names) if names else 0.0,
        defines_entry_point=bool(entry_point) and any(f.name == entry_point for f in functions),
        side_effects=sum(c.func.id in ("print", "input") for c in calls),
        stray_statements=len(stray),
    )


def _comment_lines(code: str) -> int:
    try:
        return sum(tok.type == tokenize.COMMENT for tok in tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return 0


def scores(facts: StaticFacts, entry_point_known: bool = True) -> dict[str, float]:
    """The five dimension scores (0-10) of one response."""
    per_ten = facts.ruff_findings / max(1.0, facts.code_lines / 10)
    following = 10.0 if (facts.defines_entry_point or not entry_point_known) and facts.functions else 4.0
    following -= 3.0 * min(1, facts.side_effects) + 2.0 * min(1, facts.stray_statements)
    explained = 5.0 * (facts.docstrings / facts.functions if facts.functions else 0.0)
    explained += 3.0 * min(1.0, facts.comment_lines / max(1.0, facts.code_lines / 6)) + 2.0 * facts.typed_ratio
    return {
        "instruction_following": round(max(0.0, following), 3),
        "readability": round(0.6 * facts.maintainability / 10 + 4.0 * (1 - facts.short_name_ratio), 3),
        "complexity": round(10.0 / (1.0 + max(0.0, facts.mean_complexity - 1.0) / 2.0), 3),
        "style": round(10.0 / (1.0 + per_ten), 3),
        "explanation": round(explained, 3),
    }
