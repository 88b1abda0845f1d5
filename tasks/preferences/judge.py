"""An optional LLM judge for the non-functional dimensions (CODAL-style 1-10 ratings).

A local model, run on the same vLLM sampler as the policy, rates each response per dimension
with the rubric in ``templates/judge/<dimension>.txt`` (greedy, one short answer).  An answer
without a readable score leaves that rating empty, and the pair builder then uses the static
scores (tasks/preferences/nonfunctional.py) for the instruction.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codealign.tasks.generation.prompts import dialogue_prompt, dialogue_stops
from codealign.tasks.generation.sampling import SamplingSettings, generate
from codealign.tasks.preferences.responses import Response

RUBRIC_DIR = Path(__file__).resolve().parent / "templates" / "judge"
_SCORE = re.compile(r"score\s*[:=]?\s*(10|[1-9])(?:\s*/\s*10)?\b", re.IGNORECASE)


def rubric(dimension: str, instruction: str, response: str, rubric_dir: Path = RUBRIC_DIR) -> str:
    text = (rubric_dir / f"{dimension}.txt").read_text(encoding="utf-8")
    return string.Template(text).substitute(instruction=instruction.strip(), response=response.strip())


def parse_score(answer: str) -> float | None:
    """The 1-10 rating in a judge's answer ("Score: 7", "score = 7/10"); None if there is none."""
    match = _SCORE.search(answer)
    return float(match.group(1)) if match else None


def rate_responses(llm: Any, tokenizer: Any, responses: Sequence[Response], dimensions: Sequence[str],
                   seed: int = 0) -> None:
    """Fill ``response.judge[dimension]`` (a float, or None when the answer had no score)."""
    pairs = [(r, d) for r in responses for d in dimensions]
    prompts = [dialogue_prompt(tokenizer, [], rubric(d, r.instruction, r.text)) for r, d in pairs]
    settings = SamplingSettings(n=1, temperature=0.0, max_tokens=24, seed=seed)
    answers = generate(llm, prompts, settings, [dialogue_stops(tokenizer)] * len(prompts))
    for (r, d), gens in zip(pairs, answers):
        r.judge[d] = parse_score(gens[0].text)
