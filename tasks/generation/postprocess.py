"""Turn raw model text into the code we execute, keeping both side by side.

Command mode: take the first fenced code block that defines the entry point (else the first
block, else the raw text), and add the prompt's imports if the model left them out.  Flow
mode: cut a completion at the stop sequences and at the end of the function being written;
an infilled middle is used as generated.
"""

from __future__ import annotations

import re

from tasks.benchmarks.problem import Problem

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code_block(text: str, entry_point: str = "") -> str:
    """The code in a markdown answer; the raw text when there is no fence."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if not blocks:
        return text
    python = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
    candidates = python or [b for _, b in blocks]
    if entry_point:
        for body in candidates:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE):
                return body
    return candidates[0]


def truncate(text: str, stops: list[str]) -> str:
    """Cut at the earliest stop sequence."""
    cut = len(text)
    for stop in stops:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def end_of_function_body(completion: str) -> str:
    """Keep the indented body that continues a ``def`` header; stop at the first non-empty line
    that is back at column 0."""
    lines = completion.split("\n")
    kept = []
    for i, line in enumerate(lines):
        if i > 0 and line.strip() and not line[0].isspace():
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def _prompt_imports(prompt: str) -> list[str]:
    return [line for line in prompt.splitlines() if line.startswith(("import ", "from "))]


def command_solution(problem: Problem, raw: str) -> str:
    """A full program from a Command-mode answer."""
    code = extract_code_block(raw, problem.entry_point).strip("\n") + "\n"
    missing = [imp for imp in _prompt_imports(problem.prompt) if imp not in code]
    return "\n".join(missing + [code]) if missing else code


def flow_completion(problem: Problem, raw: str, stops: list[str]) -> str:
    """The completion to append to the prompt (or the middle, for infilling)."""
    text = truncate(raw, stops)
    if problem.suffix:
        return text
    return end_of_function_body(text)
