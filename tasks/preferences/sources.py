"""Instruction sources for preference data, as one record: :class:`Instruction`.

Two kinds of source (the two paths of SelfCodeAlign-style data building):

* **with tests** — the toy train split (``toy-train``), MBPP's train split (``mbpp-train``;
  never its test split), or a JSONL file of ``instruction`` + ``tests`` (+ ``entry_point``,
  ``test_setup``, ``id``, and ``prompt``: a signature + docstring for Flow mode): responses
  are judged by the given tests;
* **without tests** — seed snippets (``toy-seeds``; JSONL records with ``seed``) or bare
  instructions (``code-alpaca``, ``new-codealpaca``; JSONL records with ``"self_tests": true``):
  the model writes the instruction (from a seed) and its own tests (SelfCodeAlign), and the
  records say so (``tests_origin = "self"``).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codealign.tasks.artifacts.store import to_uri
from codealign.tasks.files import InputError, parse_jsonl
from codealign.tasks.plugins import load_plugin, plugin_names

TestsOrigin = Literal["given", "self"]
BUILTIN_SOURCES = ("mbpp-train", "code-alpaca", "new-codealpaca")


def source_names() -> tuple[str, ...]:
    """Every named source: the toy world's and plugins' (entry points), then the built-in ones."""
    return (*plugin_names("sources"), *BUILTIN_SOURCES)


@dataclass(frozen=True)
class Instruction:
    """One instruction to sample n responses for."""

    id: str
    source: str
    instruction: str  # "" on the seed path until the model wrote it
    tests: tuple[str, ...] = ()  # assert statements; () = the model writes them
    tests_origin: TestsOrigin = "given"
    entry_point: str = ""
    test_setup: str = ""  # run before the tests (imports, fixtures)
    seed: str = ""  # SelfCodeAlign seed snippet (the seed path starts from it)
    prompt: str = ""  # Flow mode: the signature + docstring a base model completes
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_instruction(self, instruction: str) -> Instruction:
        return Instruction(self.id, self.source, instruction, self.tests, self.tests_origin, self.entry_point,
                           self.test_setup, self.seed, self.prompt, self.metadata)


@dataclass(frozen=True)
class Source:
    """A loaded source: its instructions and the identity lineage records (uri + content hash)."""

    name: str
    uri: str
    sha256: str
    instructions: list[Instruction]


def load_source(ref: str, limit: int | None = None) -> Source:
    """A built-in source by name, or a JSONL file; ``limit`` keeps the first instructions."""
    if ref in plugin_names("sources"):  # the toy world's sources, and plugins'
        source = load_plugin("sources", ref)(ref)
    elif ref == "mbpp-train":
        source = _mbpp_train()
    elif ref in ("code-alpaca", "new-codealpaca"):
        source = _alpaca(ref)
    elif ref.endswith((".jsonl", ".jsonl.gz")) or Path(ref).exists():
        source = _jsonl_file(ref)
    else:
        raise InputError(f"{ref}: unknown source; use one of {', '.join(source_names())} or a JSONL file")
    if not source.instructions:
        raise InputError(f"{source.uri}: no instructions")
    if limit is not None:
        source = Source(source.name, source.uri, source.sha256, source.instructions[:limit])
    return source


def check_mode(source: Source, mode: str) -> None:
    """Flow mode (a base model completes code) needs every instruction's code prompt and given
    tests; SelfCodeAlign's self-test path is Command mode only."""
    if mode != "flow":
        return
    for item in source.instructions:
        if item.tests_origin == "self":
            raise InputError(f"{source.uri}: {item.id}: has no tests; the self-test path needs --mode command")
        if not item.prompt:
            raise InputError(f"{source.uri}: {item.id}: no 'prompt' (a signature + docstring), which --mode flow "
                             "completes; use --mode command")


def split_tests(code: str, where: str) -> tuple[str, ...]:
    """Test code as its top-level statements (each counted on its own)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise InputError(f"{where}: tests do not parse ({exc.msg}, line {exc.lineno})") from None
    return tuple(ast.get_source_segment(code, node) or ast.unparse(node) for node in tree.body)


def _mbpp_train() -> Source:
    from codealign.tasks.problems.registry import DATA_FILES, data_dir, load_benchmark

    items = [Instruction(p.task_id, "mbpp-train", p.instruction, tuple(p.metadata["test_list"]), "given",
                         p.entry_point, p.test_setup) for p in load_benchmark("mbpp", split="train")]
    return Source("mbpp-train", to_uri(str(data_dir() / "mbpp.jsonl.gz")), DATA_FILES["mbpp.jsonl.gz"].sha256, items)


def _alpaca(name: str) -> Source:
    """Code Alpaca records (instruction + optional input) start at the response stage: the
    model answers and writes its own tests."""
    from codealign.tasks.problems.registry import DATA_FILES, data_dir, read_data_file

    file_name = {"code-alpaca": "code_alpaca_2k.json.gz", "new-codealpaca": "new_codealpaca.json.gz"}[name]
    records = json.loads(read_data_file(file_name))
    items = []
    for i, rec in enumerate(records):
        text = str(rec.get("instruction", "")).strip()
        if extra := str(rec.get("input", "")).strip():
            text = f"{text}\n\n{extra}"
        if text:
            items.append(Instruction(f"{name}/{i}", name, text, (), "self"))
    return Source(name, to_uri(str(data_dir() / file_name)), DATA_FILES[file_name].sha256, items)


def _jsonl_file(ref: str) -> Source:
    path = Path(ref)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{ref}: cannot read source file ({exc.strerror or exc})") from None
    if ref.endswith(".gz"):
        raw = gzip.decompress(raw)
    items: list[Instruction] = []
    seen: dict[str, str] = {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{ref}: not UTF-8 text ({exc})") from None
    for at, rec in parse_jsonl(text, str(path)):
        item = _file_record(rec, at, path.name)
        if item.id in seen:
            raise InputError(f"{at}: id {item.id!r} already used at {seen[item.id]}")
        seen[item.id] = at
        items.append(item)
    return Source(path.name, to_uri(str(path)), hashlib.sha256(raw).hexdigest(), items)


def _file_record(rec: dict[str, Any], at: str, source: str) -> Instruction:
    ident = str(rec.get("id") or at.rsplit("/", 1)[-1])
    if "seed" in rec and "instruction" not in rec:
        if not isinstance(rec["seed"], str) or not rec["seed"].strip():
            raise InputError(f"{at}: field 'seed' must be a non-empty string")
        return Instruction(ident, source, "", (), "self", seed=rec["seed"])
    if not isinstance(rec.get("instruction"), str) or not rec["instruction"].strip():
        raise InputError(f"{at}: missing field 'instruction' (a non-empty string; or give a 'seed' snippet)")
    if rec.get("self_tests") is True:
        return Instruction(ident, source, rec["instruction"], (), "self")
    tests = rec.get("tests")
    if tests is None:
        raise InputError(f"{at}: missing field 'tests' (assert statements; or set \"self_tests\": true to have "
                         "the model write them)")
    if isinstance(tests, str):
        statements = split_tests(tests, at)
    elif isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        statements = tuple(s for t in tests for s in split_tests(t, at))
    else:
        raise InputError(f"{at}: field 'tests' must be a string of test code or a list of assert statements")
    if not statements:
        raise InputError(f"{at}: field 'tests' is empty")
    for name in ("entry_point", "test_setup", "prompt"):
        if not isinstance(rec.get(name, ""), str):
            raise InputError(f"{at}: field {name!r} must be a string")
    return Instruction(ident, source, rec["instruction"], statements, "given", rec.get("entry_point", ""),
                       rec.get("test_setup", ""), prompt=rec.get("prompt", ""))
