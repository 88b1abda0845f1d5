"""Turn raw model text into the code we execute, keeping both side by side.

Command mode: take the first fenced code block that defines the entry point (else the first
block, else the raw text), and add the prompt's imports if the model left them out.  Flow
mode: cut a completion at the stop sequences and at the end of the function being written;
an infilled middle is used as generated.
"""

from __future__ import annotations

import re

from codealign.tasks.problems.problem import Problem

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


# The fence tags that mean each language (an untagged block counts as the expected language).
FENCE_TAGS = {
    "python": ("python", "py", "python3"), "cpp": ("cpp", "c++", "cc", "cxx"), "go": ("go", "golang"),
    "java": ("java",), "js": ("javascript", "js", "node"), "rust": ("rust", "rs"),
}


def extract_code_block(text: str, entry_point: str = "", language: str = "python") -> str:
    """The code in a markdown answer; the raw text when there is no fence."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if not blocks:
        return text
    expected = [b for lang, b in blocks if lang in (*FENCE_TAGS.get(language, (language,)), "")]
    candidates = expected or [b for _, b in blocks]
    if entry_point:  # the block that defines it (another language: that names it as a definition)
        defines = (rf"^\s*def\s+{re.escape(entry_point)}\s*\(" if language == "python"
                   else rf"\b{re.escape(entry_point)}\s*(?:\(|=|<)")
        for body in candidates:
            if re.search(defines, body, re.MULTILINE):
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


_IMPORT_LINES = {"python": ("import ", "from "), "java": ("import ",), "rust": ("use ",)}


def _prompt_imports(prompt: str, language: str = "python") -> list[str]:
    starts = _IMPORT_LINES.get(language)
    return [line for line in prompt.splitlines() if starts and line.startswith(starts)]


def command_solution(problem: Problem, raw: str) -> str:
    """A full program from a Command-mode answer."""
    code = extract_code_block(raw, problem.entry_point, problem.language).strip("\n") + "\n"
    missing = [imp for imp in _prompt_imports(problem.prompt, problem.language) if imp not in code]
    return "\n".join(missing + [code]) if missing else code


def flow_completion(problem: Problem, raw: str, stops: list[str]) -> str:
    """The completion to append to the prompt (or the middle, for infilling)."""
    text = truncate(raw, stops)
    if problem.suffix:
        return text
    if problem.language != "python":  # cut at the benchmark's stops; put back a stop it needs
        return text + problem.metadata.get("completion_end", "")
    return end_of_function_body(text)
