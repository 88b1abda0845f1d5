"""Prompt building for the two ways developers use a code model.

* **Command mode** (instruction → code): the tokenizer's chat template for instruction-tuned
  models, a plain ``### Instruction:`` / ``### Response:`` template for base models, with
  k code-only in-context demonstrations (k = 0, 1, 3, 5) from the MBPP prompt split or a file.
* **Flow mode**: (a) completion of a signature + docstring (the raw prompt), (b)
  fill-in-the-middle for infilling problems, with the model family's FIM sentinels detected
  from the tokenizer's vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from codealign.tasks.errors import CodealignError
from codealign.tasks.files import read_jsonl
from codealign.tasks.problems.problem import Problem

Mode = Literal["command", "flow"]


class TokenizerLike(Protocol):
    chat_template: Any

    def get_vocab(self) -> dict[str, int]: ...

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class FimFormat:
    """How a model family spells fill-in-the-middle (prefix-suffix-middle order)."""

    family: str
    prefix: str
    suffix: str
    middle: str
    stop: tuple[str, ...]
    marker: str  # a vocabulary entry whose presence identifies the family

    def build(self, prefix: str, suffix: str) -> str:
        return f"{self.prefix}{prefix}{self.suffix}{suffix}{self.middle}"


FIM_FORMATS: tuple[FimFormat, ...] = (
    FimFormat("deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
              ("<｜end▁of▁sentence｜>", "<|EOT|>"), "<｜fim▁hole｜>"),
    FimFormat("qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
              ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>"), "<|fim_prefix|>"),
    FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
              ("<|endoftext|>", "<file_sep>"), "<fim_prefix>"),
    # CodeLlama's sentinels carry SentencePiece's leading space: "▁<PRE>" in the vocabulary.
    FimFormat("codellama", "<PRE> ", " <SUF>", " <MID>", ("<EOT>", "</s>"), "▁<PRE>"),
)


def fim_format(family: str) -> FimFormat:
    """The FIM format of a model family by name (e.g. the toy models use StarCoder's)."""
    return next(f for f in FIM_FORMATS if f.family == family)


class NoFimTokens(CodealignError, ValueError):
    """The model has no fill-in-the-middle sentinels, so Flow-mode infilling is impossible."""


def detect_fim(tokenizer: TokenizerLike, model_name: str = "model") -> FimFormat:
    vocab = tokenizer.get_vocab()
    for fmt in FIM_FORMATS:
        if fmt.marker in vocab:
            return fmt
    known = ", ".join(f"{f.family} ({f.marker})" for f in FIM_FORMATS)
    raise NoFimTokens(
        f"{model_name}: its tokenizer has no fill-in-the-middle tokens, so it cannot be evaluated on "
        f"infilling benchmarks. Supported FIM families: {known}."
    )


@dataclass(frozen=True)
class Shot:
    """A code-only demonstration: an instruction and the code that answers it."""

    instruction: str
    code: str


def mbpp_prompt_shots() -> list[Shot]:
    """The MBPP prompt split (tasks 1-10), the conventional source of MBPP few-shot examples."""
    from codealign.tasks.problems.registry import load_benchmark

    return [Shot(p.instruction, p.canonical_completion.replace("\r\n", "\n").strip())
            for p in load_benchmark("mbpp", split="prompt")]


def load_shots(path: str | Path) -> list[Shot]:
    """Shots from a JSONL file of ``{"instruction": ..., "code": ...}``."""
    return [Shot(str(rec["instruction"]), str(rec["code"]))
            for _, rec in read_jsonl(path, "shots file", required=("instruction", "code"))]


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def plain_dialogue_prompt(turns: list[tuple[str, str]], user: str) -> str:
    """Base-model prompt: Alpaca-style ``### Instruction:`` / ``### Response:`` blocks, earlier
    (user, answer) turns first; the model writes the last response."""
    blocks = [f"### Instruction:\n{u}\n\n### Response:\n{a}\n\n" for u, a in turns]
    blocks.append(f"### Instruction:\n{user}\n\n### Response:\n")
    return "".join(blocks)


def chat_dialogue_prompt(tokenizer: TokenizerLike, turns: list[tuple[str, str]], user: str) -> str:
    """Instruct-model prompt: earlier (user, answer) turns as chat turns, then ``user``."""
    messages: list[dict[str, str]] = []
    for u, a in turns:
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": user})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def dialogue_prompt(tokenizer: TokenizerLike, turns: list[tuple[str, str]], user: str) -> str:
    """The chat template when the model has one, the plain template otherwise."""
    if has_chat_template(tokenizer):
        return chat_dialogue_prompt(tokenizer, turns, user)
    return plain_dialogue_prompt(turns, user)


def plain_instruction_prompt(instruction: str, shots: list[Shot]) -> str:
    """Base-model Command-mode prompt: demonstrations first."""
    return plain_dialogue_prompt([(s.instruction, fenced(s.code)) for s in shots], instruction)


def chat_instruction_prompt(tokenizer: TokenizerLike, instruction: str, shots: list[Shot]) -> str:
    """Instruct-model Command-mode prompt: demonstrations as earlier chat turns."""
    return chat_dialogue_prompt(tokenizer, [(s.instruction, fenced(s.code)) for s in shots], instruction)


def has_chat_template(tokenizer: TokenizerLike) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


@dataclass(frozen=True)
class PromptSpec:
    """How to prompt: mode, number of shots, and their source (None = MBPP prompt split)."""

    mode: Mode = "command"
    shots: int = 0
    shots_file: str | None = None

    def __post_init__(self) -> None:
        if self.shots not in (0, 1, 3, 5):
            raise ValueError(f"shots must be 0, 1, 3 or 5, got {self.shots}")


def build_prompt(problem: Problem, spec: PromptSpec, tokenizer: TokenizerLike, model_name: str = "model",
                 shots: list[Shot] | None = None) -> str:
    """The exact text sent to the model for one problem."""
    if spec.mode == "flow":
        if problem.suffix:
            return detect_fim(tokenizer, model_name).build(problem.prompt, problem.suffix)
        return problem.prompt
    if not problem.instruction:
        raise ValueError(f"{problem.task_id}: {problem.benchmark} has no natural-language instruction "
                         f"(Command mode); use --mode flow")
    demos = (shots or [])[: spec.shots]
    return dialogue_prompt(tokenizer, [(s.instruction, fenced(s.code)) for s in demos], problem.instruction)


# Flow-mode completion of a signature + docstring ends at the next top-level statement (Codex).
COMPLETION_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def stop_sequences(problem: Problem, spec: PromptSpec, tokenizer: TokenizerLike) -> list[str]:
    """Where generation should stop.  Flow-mode completion stops at the next top-level
    statement (Codex convention); FIM stops at the family's end tokens; Command mode relies on
    the end-of-sequence token and a following instruction block."""
    if spec.mode == "flow":
        if problem.suffix:
            return list(detect_fim(tokenizer).stop)
        if problem.language != "python":  # HumanEval-X / MultiPL-E: the benchmark's own stops
            return list(problem.stop_tokens)
        return list(COMPLETION_STOPS)
    return dialogue_stops(tokenizer)


def dialogue_stops(tokenizer: TokenizerLike) -> list[str]:
    """A chat model stops at its end-of-turn token; a plain-template one before the next block."""
    return [] if has_chat_template(tokenizer) else ["### Instruction:"]
