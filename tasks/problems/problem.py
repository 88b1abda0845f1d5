"""The benchmark problem record: what every benchmark's loader produces and every stage consumes.

A leaf module (standard library only), so that benchmark sources — the registry of shipped
benchmarks, the toy world, user files — can all build problems without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Flavor = Literal["humaneval", "mbpp"]


@dataclass(frozen=True)
class DifferentialTests:
    """evalplus-style tests: call the entry point on each input and compare with the canonical
    solution's output (exact, or within ``atol`` for floats, plus evalplus' special oracles).

    ``base_inputs`` are the benchmark's original inputs and ``plus_inputs`` the added ones; they
    are judged as two groups, as evalplus does (its float tolerance handling restarts per group).
    """

    flavor: Flavor
    base_inputs: list[Any]
    plus_inputs: list[Any]
    atol: float
    output_not_none: bool = False


@dataclass(frozen=True)
class Problem:
    """One benchmark task, whatever the benchmark.

    ``prompt`` is the code a model continues in Flow mode (signature + docstring; the infilling
    prefix); ``instruction`` is the natural-language task for Command mode.  A *completion* is
    what a model writes after the prompt (the middle, for infilling); a *solution* is the full
    program text (:meth:`solution`).
    """

    benchmark: str
    task_id: str
    prompt: str
    instruction: str
    entry_point: str
    canonical_completion: str
    test_setup: str = ""
    test: str = ""
    suffix: str = ""
    split: str = "test"
    completion_is_program: bool = False
    differential: DifferentialTests | None = field(default=None, repr=False)
    # "python", or another language's code (tasks.sandbox.toolchains.LANGUAGES): such a
    # program is compiled and run, ``test_setup + solution + test``; stops for Flow mode
    language: str = "python"
    stop_tokens: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def solution(self, completion: str) -> str:
        """The full program a completion stands for (prompt + completion + suffix)."""
        if self.completion_is_program:
            return completion
        return self.prompt + completion + self.suffix

    @property
    def canonical_solution(self) -> str:
        return self.solution(self.canonical_completion)

    def test_program(self, solution: str) -> str:
        """Script-style check program: passing means it runs to its end without an exception."""
        if self.differential is not None:
            raise ValueError(f"{self.task_id} uses differential tests, not a test script")
        if self.language != "python":
            return "{}{}\n{}\n".format(*self.compiled_parts(solution))
        # MBPP's test_setup_code builds fixtures from classes the solution defines, so it
        # follows the solution.
        return f"{solution}\n\n{self.test_setup}\n{self.test}\n"


    def compiled_parts(self, solution: str) -> tuple[str, str, str]:
        """Another language's program in its three parts: the test file's header, the solution
        (Go: with the imports it needs) and the tests; the sandbox guards the seams
        (tasks.sandbox.guards)."""
        go_packages = self.metadata.get("go_helper_packages")
        if go_packages is not None:
            solution = go_with_imports(solution, self.test_setup, go_packages)
        return self.test_setup, solution, self.test


_GO_IMPORT = re.compile(r"^import\s*(\([^)]*\)|\"[^\"]+\")[ \t]*\n?", re.MULTILINE)


def go_with_imports(solution: str, test_setup: str, packages: list[str]) -> str:
    """HumanEval-X's Go programs (CodeGeeX's rule): the test file's header declares the package
    and the test imports, so the solution's own import block is dropped and each helper package
    the code uses (``name.`` appears) and the header lacks is imported; Go rejects unused ones."""
    code = _GO_IMPORT.sub("", solution)
    code = re.sub(r"^package\s+\w+[ \t]*\n", "", code, flags=re.MULTILINE)
    bare = re.sub(r"//[^\n]*|/\*.*?\*/", "", code, flags=re.DOTALL)  # "a list of strings." is no use
    used = [pkg for pkg in packages if f'"{pkg}"' not in test_setup
            and re.search(rf"(?<![\w.]){re.escape(pkg.rsplit('/', 1)[-1])}\.", bare)]
    if not used:
        return code
    return "import (\n" + "".join(f'    "{pkg}"\n' for pkg in used) + ")\n" + code


def instruction_from_prompt(prompt: str, entry_point: str) -> str:
    """A Command-mode instruction for a signature+docstring task (the docstring, as a request)."""
    return (
        f"Write a Python function `{entry_point}` that satisfies this specification:\n\n"
        f"```python\n{prompt.strip()}\n```"
    )
