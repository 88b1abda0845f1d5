"""Synthetic toy task families: small, deterministic Python tasks with tests and references.

The toy world lets every codealign flow run with real signal on a CPU-only machine: tiny
models trained on the ``train`` split solve some, not all, of the ``test`` (held-out) split.
Each task is available as a Command-mode instruction, a Flow-mode signature + docstring, and
a fill-in-the-middle problem, through the same :class:`~codealign.tasks.problems.registry.Problem` record as the
real benchmarks.

A task is drawn from a seed; its split is decided by a hash of what it *is* (family, variant,
constants), so no held-out task is a copy of a training task.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codealign.tasks.problems.problem import Problem

HELD_OUT_PERCENT = 20


@dataclass(frozen=True)
class ToyTask:
    """One toy task.  ``body`` computes ``result`` and ends with ``    return result``."""

    family: str
    variant: str
    params: tuple[Any, ...]
    name: str
    args: str
    doc: str
    body: str
    inputs: tuple[tuple[Any, ...], ...]

    @property
    def identity(self) -> str:
        return f"{self.family}:{self.variant}:{self.params}"

    @property
    def split(self) -> str:
        digest = int(hashlib.sha256(self.identity.encode()).hexdigest(), 16)
        return "test" if digest % 100 < HELD_OUT_PERCENT else "train"

    @property
    def prompt(self) -> str:
        return f'def {self.name}({self.args}):\n    """{self.doc}"""\n'

    @property
    def instruction(self) -> str:
        return f"Write a Python function `{self.name}({self.args})`. {self.doc}"

    @property
    def source(self) -> str:
        return self.prompt + self.body

    def expected_outputs(self) -> list[Any]:
        namespace: dict[str, Any] = {}
        exec(self.source, namespace)  # noqa: S102 - our own reference code
        return [namespace[self.name](*inp) for inp in self.inputs]

    @property
    def concepts(self) -> str:
        """What SelfCodeAlign's concept stage should extract from this task's source (the toy
        instruct model learns it)."""
        return f"{self.family}, {self.variant.replace('_', ' ')}: function {self.name}({self.args}). {self.doc}"

    def asserts(self) -> list[str]:
        """The tests as one ``assert`` statement per input (counted one by one)."""
        return [f"assert {self.name}({', '.join(repr(a) for a in inp)}) == {out!r}"
                for inp, out in zip(self.inputs, self.expected_outputs())]

    def test(self) -> str:
        lines = ["def check(candidate):"]
        for inp, out in zip(self.inputs, self.expected_outputs()):
            call = ", ".join(repr(a) for a in inp)
            lines.append(f"    assert candidate({call}) == {out!r}")
        return "\n".join(lines) + f"\n\ncheck({self.name})\n"


def _ints(rng: random.Random, n: int, lo: int = -20, hi: int = 40) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _words(rng: random.Random, n: int) -> list[str]:
    alphabet = "abcdehlmnorst"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(n)]


def _lists(rng: random.Random, n: int) -> list[list[int]]:
    return [_ints(rng, rng.randint(0, 6), -9, 20) for _ in range(n)]


def arithmetic(rng: random.Random) -> ToyTask:
    a, b = rng.randint(2, 9), rng.randint(1, 30)
    variant = rng.choice(["mul_add", "add_mul", "mul_sub"])
    expr, doc = {
        "mul_add": (f"x * {a} + {b}", f"Return x multiplied by {a}, plus {b}."),
        "add_mul": (f"(x + {b}) * {a}", f"Return x plus {b}, multiplied by {a}."),
        "mul_sub": (f"x * {a} - {b}", f"Return x multiplied by {a}, minus {b}."),
    }[variant]
    inputs = tuple((x,) for x in _ints(rng, 5))
    return ToyTask("arithmetic", variant, (a, b), f"{variant}_{a}_{b}", "x", doc,
                   f"    result = {expr}\n    return result\n", inputs)


def strings(rng: random.Random) -> ToyTask:
    variant = rng.choice(["repeat", "prefix", "replace", "suffix"])
    if variant == "repeat":
        k = rng.randint(2, 5)
        params, expr, doc = (k,), f"s * {k}", f"Return s repeated {k} times."
    elif variant == "prefix":
        p = rng.choice(_words(rng, 4))
        params, expr, doc = (p,), f"{p!r} + s", f"Return the text {p!r} followed by s."
    elif variant == "suffix":
        p = rng.choice(_words(rng, 4))
        params, expr, doc = (p,), f"s + {p!r}", f"Return s followed by the text {p!r}."
    else:
        c1, c2 = rng.sample("abcdehlmnorst", 2)
        params, expr, doc = (c1, c2), f"s.replace({c1!r}, {c2!r})", f"Return s with every {c1!r} replaced by {c2!r}."
    name = f"{variant}_" + "_".join(str(p) for p in params)
    inputs = tuple((w,) for w in _words(rng, 5))
    return ToyTask("strings", variant, params, name, "s", doc, f"    result = {expr}\n    return result\n", inputs)


def lists(rng: random.Random) -> ToyTask:
    k = rng.randint(1, 50)
    variant = rng.choice(["keep_greater", "keep_less", "add_each", "times_each", "minus_each", "cap_each"])
    expr, doc = {
        "keep_greater": (f"[x for x in xs if x > {k}]", f"Return the elements of xs that are greater than {k}."),
        "keep_less": (f"[x for x in xs if x < {k}]", f"Return the elements of xs that are less than {k}."),
        "add_each": (f"[x + {k} for x in xs]", f"Return a list with {k} added to each element of xs."),
        "times_each": (f"[x * {k} for x in xs]", f"Return a list with each element of xs multiplied by {k}."),
        "minus_each": (f"[x - {k} for x in xs]", f"Return a list with {k} subtracted from each element of xs."),
        "cap_each": (f"[min(x, {k}) for x in xs]", f"Return a list with each element of xs capped at {k}."),
    }[variant]
    inputs = tuple((xs,) for xs in _lists(rng, 5))
    return ToyTask("lists", variant, (k,), f"{variant}_{k}", "xs", doc, f"    result = {expr}\n    return result\n",
                   inputs)


def conditionals(rng: random.Random) -> ToyTask:
    k, a, b = rng.randint(-5, 15), rng.randint(0, 50), rng.randint(0, 50)
    variant = rng.choice(["greater", "less"])
    op = ">" if variant == "greater" else "<"
    word = "greater than" if variant == "greater" else "less than"
    doc = f"Return {a} if x is {word} {k}, otherwise return {b}."
    body = f"    if x {op} {k}:\n        result = {a}\n    else:\n        result = {b}\n    return result\n"
    inputs = tuple((x,) for x in sorted(set(_ints(rng, 4, -10, 25)) | {k}))
    return ToyTask("conditionals", variant, (k, a, b), f"pick_{variant}_{k}_{a}_{b}".replace("-", "m"), "x", doc,
                   body, inputs)


LOOPS = {  # variant: (what it does, the loop's body)
    "sum_times": ("Return the sum of the elements of xs, each multiplied by {k}.", "result += x * {k}"),
    "sum_plus": ("Return the sum of the elements of xs, each increased by {k}.", "result += x + {k}"),
    "sum_minus": ("Return the sum of the elements of xs, each decreased by {k}.", "result += x - {k}"),
    "count_equal": ("Return how many elements of xs are equal to {k}.", "if x == {k}:\n            result += 1"),
    "count_greater": ("Return how many elements of xs are greater than {k}.",
                      "if x > {k}:\n            result += 1"),
    "count_less": ("Return how many elements of xs are less than {k}.", "if x < {k}:\n            result += 1"),
}


def loops(rng: random.Random) -> ToyTask:
    k = rng.randint(2, 50)
    variant = rng.choice(list(LOOPS))
    doc, step = (text.format(k=k) for text in LOOPS[variant])
    body = f"    result = 0\n    for x in xs:\n        {step}\n    return result\n"
    inputs = tuple((xs + [k] * (i % 3),) for i, xs in enumerate(_lists(rng, 5)))
    return ToyTask("loops", variant, (k,), f"{variant}_{k}", "xs", doc, body, inputs)


def dicts(rng: random.Random) -> ToyTask:
    k = rng.randint(1, 50)
    variant = rng.choice(["get_default", "add_values", "sub_values", "times_values", "len_plus",
                          "count_chars_times"])
    if variant == "get_default":
        doc = f"Return d[key] if key is in d, otherwise return {k}."
        body = f"    result = d.get(key, {k})\n    return result\n"
        args = "d, key"
        inputs = tuple(({w: i for i, w in enumerate(_words(rng, 3))}, w) for w in _words(rng, 4))
    elif variant in ("add_values", "sub_values", "times_values"):
        op, how = {"add_values": ("+", "increased by"), "sub_values": ("-", "decreased by"),
                   "times_values": ("*", "multiplied by")}[variant]
        doc = f"Return a new dictionary with the same keys as d and every value {how} {k}."
        body = f"    result = {{key: value {op} {k} for key, value in d.items()}}\n    return result\n"
        args = "d"
        inputs = tuple(({w: v for w, v in zip(_words(rng, 3), _ints(rng, 3))},) for _ in range(4))
    elif variant == "len_plus":
        doc = f"Return the number of keys in d plus {k}."
        body = f"    result = len(d) + {k}\n    return result\n"
        args = "d"
        inputs = tuple(({w: v for w, v in zip(_words(rng, n), _ints(rng, n))},) for n in range(4))
    else:
        doc = f"Return a dictionary mapping each character of s to {k} times the number of times it appears."
        body = f"    result = {{}}\n    for c in s:\n        result[c] = result.get(c, 0) + {k}\n    return result\n"
        args = "s"
        inputs = tuple((w,) for w in _words(rng, 5))
    return ToyTask("dicts", variant, (k,), f"{variant}_{k}", args, doc, body, inputs)


FAMILIES: dict[str, Callable[[random.Random], ToyTask]] = {
    "arithmetic": arithmetic,
    "strings": strings,
    "lists": lists,
    "conditionals": conditionals,
    "loops": loops,
    "dicts": dicts,
}


def generate(seed: int, family: str) -> ToyTask:
    return FAMILIES[family](random.Random(f"{family}:{seed}"))


def toy_tasks(split: str, per_family: int, skip: int = 0) -> list[ToyTask]:
    """``per_family`` distinct tasks of each family in ``split`` (after the first ``skip``), drawn
    from seeds upward and interleaved family by family, so any prefix (``--limit``) covers every
    family evenly."""
    by_family: list[list[ToyTask]] = []
    for family in FAMILIES:
        seen: dict[str, ToyTask] = {}
        seed, wanted = 0, skip + per_family
        while len(seen) < wanted and seed < 200 * wanted + 1000:
            task = generate(seed, family)
            seed += 1
            if task.split == split and task.identity not in seen:
                seen[task.identity] = task
        by_family.append(list(seen.values())[skip:])
    return [task for row in itertools.zip_longest(*by_family) for task in row if task is not None]


def to_problem(task: ToyTask, benchmark: str = "toy") -> Problem:
    """The task as a benchmark problem; ``toy-infill`` asks for the body minus its final
    ``return result`` (the suffix)."""
    task_id = f"toy/{task.family}/{task.name}"
    if benchmark == "toy-infill":
        middle, suffix = task.body[: -len("    return result\n")], "    return result\n"
        return Problem("toy-infill", task_id, task.prompt, task.instruction, task.name, middle, suffix=suffix,
                       test=task.test(), split=task.split)
    return Problem("toy", task_id, task.prompt, task.instruction, task.name, task.body, test=task.test(),
                   split=task.split)


# The toy models are trained on the first TOY_MODEL_TRAIN_PER_FAMILY training tasks of each
# family (tasks/toy/models.py); preference sources draw the next ones (tasks/toy/sources.py), so
# alignment data are instructions the starting models never saw, as they are in real alignment.
TOY_MODEL_TRAIN_PER_FAMILY = 200
# 50 held-out tasks per family: 300 problems, enough for a paired interval of a few points.
TOY_TEST_PER_FAMILY = 50


def toy_benchmark(benchmark: str = "toy") -> list[Problem]:
    """The held-out toy benchmark (TOY_TEST_PER_FAMILY tasks per family, interleaved)."""
    return [to_problem(t, benchmark) for t in toy_tasks("test", TOY_TEST_PER_FAMILY)]
