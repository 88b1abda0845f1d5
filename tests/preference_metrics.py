"""Test oracle: preference metrics of a trained model on a pairs dataset, computed with plain transformers
(independent of the trainer): DPO's implicit reward margin and the chosen-over-rejected
accuracy against the reference (starting) model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PreferenceMetrics:
    margin: float  # mean over pairs of [log pi(c) - log ref(c)] - [log pi(r) - log ref(r)]
    accuracy: float  # fraction of pairs whose margin is positive
    pairs: int


def sequence_logp(model: Any, tokenizer: Any, prompt: str, completion: str) -> float:
    """Summed log-probability of ``completion`` (plus end-of-sequence, as TRL trains it) after
    ``prompt``."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[len(prompt_ids) - 1:].sum())


def preference_metrics(policy_path: str, reference_path: str, rows: list[dict[str, Any]]) -> PreferenceMetrics:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    policy = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    reference = AutoModelForCausalLM.from_pretrained(reference_path).eval()
    margins = []
    for row in rows:
        def ratio(text: str, row: dict[str, Any] = row) -> float:
            return (sequence_logp(policy, tokenizer, row["prompt"], text)
                    - sequence_logp(reference, tokenizer, row["prompt"], text))

        margins.append(ratio(row["chosen"]) - ratio(row["rejected"]))
    return PreferenceMetrics(sum(margins) / len(margins), sum(m > 0 for m in margins) / len(margins), len(margins))
