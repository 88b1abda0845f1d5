"""Quality gates for preference data: duplicates, benchmark contamination, degenerate
responses, reward hacking.  Each gate says *why* it dropped or flagged something, so every
dataset's stats can count drops per gate (a bad pair set silently ruins a whole sweep).

* exact duplicates (normalized code) and near duplicates (MinHash LSH over word shingles,
  ``datasketch``) collapse to their first occurrence;
* decontamination: n-gram overlap (default 10 tokens) with every evaluation benchmark
  codealign ships — prompts, instructions, canonical solutions and tests — names the matched
  benchmark task;
* degenerate responses: no code, repeated lines, cut off at the token limit;
* reward hacking: a response that overrides ``__eq__``/``__hash__``, reads or rewrites the test
  code, ``sys.modules`` or builtins, touches the harness (signals, timers, exits), or special-
  cases the test inputs.  Flagged responses are never chosen.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")

# Benchmarks a preference set is decontaminated against by default: everything codealign
# evaluates with except the toy world, whose held-out split is kept apart by construction
# (tasks/toy/families.py) and whose templated texts share n-grams with every toy train task.
DECONTAMINATE_AGAINST = ("humaneval+", "mbpp", "mbpp+", "humaneval-infill-single", "humaneval-infill-multi",
                         "humaneval-infill-span", "humaneval-infill-span-light")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def normalized_code(code: str) -> str:
    """Code with comments, docstring-free formatting and whitespace differences removed (for
    exact-duplicate detection); unparsable code is compared by its stripped lines."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return "\n".join(line.strip() for line in code.splitlines() if line.strip())


# ------------------------------------------------------------------------- near duplicates


def near_duplicates(texts: Sequence[str], threshold: float = 0.85, num_perm: int = 128,
                    shingle: int = 3) -> dict[int, int]:
    """``{index: index of the earlier text it nearly duplicates}`` (estimated Jaccard similarity
    of word ``shingle``-grams >= ``threshold``); the first of each group is kept."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    duplicate_of: dict[int, int] = {}
    for i, text in enumerate(texts):
        words = tokens(text)
        grams = {" ".join(words[j:j + shingle]) for j in range(max(1, len(words) - shingle + 1))}
        sketch = MinHash(num_perm=num_perm, seed=1)
        for gram in sorted(grams):
            sketch.update(gram.encode("utf-8"))
        if hits := lsh.query(sketch):
            duplicate_of[i] = min(hits)
            continue
        lsh.insert(i, sketch)
    return duplicate_of


# ------------------------------------------------------------------------- decontamination


class ContaminationIndex:
    """Every ``n``-token window of the evaluation benchmarks' texts, mapped to the task it
    comes from."""

    def __init__(self, n: int = 10, benchmarks: Iterable[str] = DECONTAMINATE_AGAINST):
        from codealign.tasks.problems.registry import load_benchmark

        self.n = n
        self._grams: dict[int, str] = {}
        seen: set[str] = set()
        for name in benchmarks:
            problems = load_benchmark(name)
            if name in ("mbpp", "mbpp-sanitized"):
                problems = [p for p in problems if p.split == "test"]
            for p in problems:
                for text in (p.prompt, p.instruction, p.canonical_solution, p.test):
                    if text and text not in seen:
                        seen.add(text)
                        self._add(text, f"{name}:{p.task_id}")

    def _windows(self, text: str) -> Iterable[int]:
        words = tokens(text)
        for i in range(len(words) - self.n + 1):
            yield hash(tuple(words[i:i + self.n]))

    def _add(self, text: str, where: str) -> None:
        for gram in self._windows(text):
            self._grams.setdefault(gram, where)

    def match(self, text: str) -> str | None:
        """The benchmark task (``benchmark:task_id``) ``text`` shares an n-gram with, if any."""
        for gram in self._windows(text):
            if (where := self._grams.get(gram)) is not None:
                return where
        return None


# ------------------------------------------------------------------------- degenerate


def degenerate_reason(code: str, finish_reason: str | None, max_repeats: int = 4) -> str | None:
    """Why a response is unusable as a training target (None if it is usable)."""
    if finish_reason == "length":
        return "truncated at max tokens"
    stripped = [line.strip() for line in code.splitlines() if line.strip()]
    if not stripped:
        return "no code"
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        tree = None
    if tree is not None and not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                                    for n in tree.body):
        return "no function"
    run = 1
    for prev, line in zip(stripped, stripped[1:]):
        run = run + 1 if line == prev else 1
        if run >= max_repeats:
            return f"a line repeated {run} times"
    if len(stripped) >= 8 and len(set(stripped)) <= len(stripped) // 2:
        return "mostly repeated lines"
    return None


# ------------------------------------------------------------------------- reward hacking

_EQ_METHODS = {"__eq__", "__ne__", "__hash__", "__bool__", "__instancecheck__"}
_HARNESS_MODULES = {"signal", "resource", "inspect", "gc", "traceback", "builtins", "ctypes", "atexit", "faulthandler"}
_HARNESS_ATTRS = {"modules", "_getframe", "settrace", "setprofile", "setitimer", "exit", "_exit", "kill",
                  "__builtins__", "__code__", "f_back", "f_globals", "f_locals", "tb_frame"}
_EXIT_CALLS = {"exit", "quit"}


def reward_hacks(code: str, tests: Sequence[str] = ()) -> list[str]:
    """The reward-hacking patterns in ``code`` (empty when none).  ``tests`` are the
    statements it is judged by, for the special-casing check."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return []
    flags: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                names = _assigned_names(item)
                if names & _EQ_METHODS:
                    flags.add(f"overrides {sorted(names & _EQ_METHODS)[0]}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) else {
                (node.module or "").split(".")[0]}
            if modules & _HARNESS_MODULES:
                flags.add(f"imports {sorted(modules & _HARNESS_MODULES)[0]}")
        elif isinstance(node, ast.Attribute) and node.attr in _HARNESS_ATTRS:
            flags.add(f"touches .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "__import__", "globals", "AssertionError"):
            if node.id != "globals" or isinstance(getattr(node, "ctx", None), ast.Load):
                flags.add(f"uses {node.id}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _EXIT_CALLS:
            flags.add(f"calls {node.func.id}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            flags.add("opens files")
    if special := _special_cased_inputs(tree, tests):
        flags.add(f"special-cases test inputs {special}")
    return sorted(flags)


def _assigned_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def _literal(node: ast.AST) -> object:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    return repr(value)


_NOT_LITERAL = object()
_COMMON_LITERALS = {repr(v) for v in (0, 1, -1, 2, "", [], (), {}, None, True, False)}


def _special_cased_inputs(tree: ast.AST, tests: Sequence[str]) -> str:
    """Test-call arguments the code compares against literally (``if x == 5:``, ``x in (5, 7)``,
    a dict keyed by them): two or more distinct ones is special-casing."""
    inputs: set[str] = set()
    for statement in tests:
        try:
            test_tree = ast.parse(statement)
        except SyntaxError:
            continue
        for node in ast.walk(test_tree):
            if isinstance(node, ast.Call):
                for arg in node.args:
                    if (value := _literal(arg)) is not _NOT_LITERAL:
                        inputs.add(value)
    inputs -= _COMMON_LITERALS  # base cases (``if n == 0:``) are not special-casing
    if not inputs:
        return ""
    compared: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.In, ast.Is)) for op in node.ops):
            for side in (node.left, *node.comparators):
                candidates = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                compared |= {v for c in candidates if (v := _literal(c)) is not _NOT_LITERAL} & inputs
        elif isinstance(node, ast.Dict):
            compared |= {v for k in node.keys if k is not None and (v := _literal(k)) is not _NOT_LITERAL} & inputs
    if len(compared) >= 2:
        return ", ".join(sorted(compared)[:3])
    return ""
