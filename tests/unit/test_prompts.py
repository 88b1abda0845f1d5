"""Prompt building for every mode and FIM family (exact strings), and code extraction."""

from __future__ import annotations

import pytest

from codealign.tasks.generation.postprocess import (
    command_solution,
    end_of_function_body,
    extract_code_block,
    flow_completion,
    truncate,
)
from codealign.tasks.generation.prompts import (
    NoFimTokens,
    PromptSpec,
    Shot,
    build_prompt,
    detect_fim,
    stop_sequences,
)
from codealign.tasks.problems.problem import Problem


class FakeTokenizer:
    """Just enough of a Hugging Face tokenizer: a vocabulary and an optional chat template."""

    def __init__(self, vocab: list[str], chat: bool = False):
        self._vocab = {tok: i for i, tok in enumerate(vocab)}
        self.chat_template = "fake" if chat else None

    def get_vocab(self) -> dict[str, int]:
        return self._vocab

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


PROBLEM = Problem("humaneval", "HumanEval/0", "from typing import List\n\ndef f(x):\n    \"\"\"Double x.\"\"\"\n",
                  "Write f(x) that doubles x.", "f", "    return 2 * x\n", test="assert f(2) == 4")
INFILL = Problem("humaneval-infill-single", "Single/0", "def f(x):\n", "", "f", "    y = 2 * x\n",
                 suffix="    return y\n", test="assert f(2) == 4")
SHOTS = [Shot("Add one.", "def g(x):\n    return x + 1"), Shot("Negate.", "def h(x):\n    return -x")]
BASE = FakeTokenizer(["a", "b"])
CHAT = FakeTokenizer(["a"], chat=True)


def test_command_mode_base_model_plain_template_with_shots():
    text = build_prompt(PROBLEM, PromptSpec("command", 1), BASE, shots=SHOTS)
    assert text == (
        "### Instruction:\nAdd one.\n\n### Response:\n```python\ndef g(x):\n    return x + 1\n```\n\n"
        "### Instruction:\nWrite f(x) that doubles x.\n\n### Response:\n"
    )
    assert stop_sequences(PROBLEM, PromptSpec("command"), BASE) == ["### Instruction:"]


def test_command_mode_zero_shot_base():
    assert build_prompt(PROBLEM, PromptSpec("command", 0), BASE, shots=SHOTS) == (
        "### Instruction:\nWrite f(x) that doubles x.\n\n### Response:\n"
    )


def test_command_mode_instruct_model_uses_chat_template_and_shot_turns():
    text = build_prompt(PROBLEM, PromptSpec("command", 1), CHAT, shots=SHOTS)
    assert text == (
        "<user>Add one.</user><assistant>```python\ndef g(x):\n    return x + 1\n```</assistant>"
        "<user>Write f(x) that doubles x.</user><assistant>"
    )


@pytest.mark.parametrize("shots", [2, 4, 10])
def test_only_0_1_3_5_shots(shots):
    with pytest.raises(ValueError, match="0, 1, 3 or 5"):
        PromptSpec("command", shots)


def test_flow_completion_is_the_raw_prompt():
    assert build_prompt(PROBLEM, PromptSpec("flow"), CHAT) == PROBLEM.prompt
    assert "\ndef " in stop_sequences(PROBLEM, PromptSpec("flow"), CHAT)


FIM_CASES = {
    "starcoder": (["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
                  "<fim_prefix>def f(x):\n<fim_suffix>    return y\n<fim_middle>", "<|endoftext|>"),
    "deepseek-coder": (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
                       "<｜fim▁begin｜>def f(x):\n<｜fim▁hole｜>    return y\n<｜fim▁end｜>", "<｜end▁of▁sentence｜>"),
    "qwen2.5-coder": (["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"],
                      "<|fim_prefix|>def f(x):\n<|fim_suffix|>    return y\n<|fim_middle|>", "<|endoftext|>"),
    "codellama": (["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"], "<PRE> def f(x):\n <SUF>    return y\n <MID>", "<EOT>"),
}


@pytest.mark.parametrize("family", sorted(FIM_CASES))
def test_fim_prompt_per_family(family):
    vocab, expected, stop = FIM_CASES[family]
    tok = FakeTokenizer(vocab)
    assert detect_fim(tok).family == family
    assert build_prompt(INFILL, PromptSpec("flow"), tok) == expected
    assert stop in stop_sequences(INFILL, PromptSpec("flow"), tok)


def test_model_without_fim_tokens_is_a_clear_error():
    with pytest.raises(NoFimTokens, match="my-model: its tokenizer has no fill-in-the-middle tokens"):
        build_prompt(INFILL, PromptSpec("flow"), BASE, model_name="my-model")


def test_command_mode_needs_an_instruction():
    with pytest.raises(ValueError, match="no natural-language instruction"):
        build_prompt(INFILL, PromptSpec("command"), BASE)


# ----------------------------------------------------------------------------- extraction


def test_extract_prefers_block_defining_entry_point():
    text = "Here:\n```\nprint('hi')\n```\nand\n```python\ndef f(x):\n    return 2 * x\n```\nDone."
    assert extract_code_block(text, "f") == "def f(x):\n    return 2 * x\n"


def test_extract_unterminated_fence_and_no_fence():
    assert extract_code_block("```python\ndef f(x):\n    return x", "f") == "def f(x):\n    return x"
    assert extract_code_block("def f(x):\n    return x", "f") == "def f(x):\n    return x"


def test_command_solution_adds_missing_prompt_imports():
    raw = "```python\ndef f(x: List[int]):\n    return 2 * x\n```"
    assert command_solution(PROBLEM, raw) == "from typing import List\ndef f(x: List[int]):\n    return 2 * x\n"


def test_flow_completion_cuts_at_stops_and_function_end():
    raw = "    return 2 * x\n\nprint(f(3))\n"
    assert flow_completion(PROBLEM, raw, ["\nprint("]) == "    return 2 * x\n"
    assert end_of_function_body("    y = x\n    return y\nz = 1\n") == "    y = x\n    return y\n"
    assert truncate("abc<|endoftext|>def", ["<|endoftext|>"]) == "abc"


def test_infill_middle_kept_as_generated_until_stop():
    assert flow_completion(INFILL, "    y = 2 * x\n<|endoftext|>junk", ["<|endoftext|>"]) == "    y = 2 * x\n"
