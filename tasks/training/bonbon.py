"""BoNBoN alignment (Gui, Garbacea, Veitch 2024), as the paper's formula states it:

    loss = alpha * NLL(best) + (1 - alpha) * (h - 1 / (2 beta))^2
    h    = [log pi(best) - log pi_ref(best)] - [log pi(worst) - log pi_ref(worst)]

with **sequence-summed** log-probabilities in both terms (TRL's ``loss_type=["sft", "ipo"]``
averages per token, which changes both the NLL's scale and IPO's target).

The authors' public training code differs: it also adds DPO's log-sigmoid term to the loss.
We follow the paper: its analysis (the best-of-n distribution as the target, ``1/(2 beta)`` as
the log-ratio gap that target implies) is what this loss is derived from, and the extra term,
which the paper does not state, would pull towards DPO's optimum instead.  The trainer is TRL's
DPOTrainer with this loss in place of DPO's: data, reference model, PEFT handling and logging
stay TRL's.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOTrainer

_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


def bonbon_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
                ref_rejected_logps: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Mean over the batch of alpha * -log pi(best) + (1 - alpha) * (h - 1/(2 beta))^2; every
    argument is a per-sequence sum of token log-probabilities."""
    h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    per_pair = alpha * -chosen_logps + (1 - alpha) * (h - 1 / (2 * beta)) ** 2
    return per_pair.mean()


class BoNBoNTrainer(DPOTrainer):
    """DPOTrainer whose loss is BoNBoN's (``bonbon_alpha``, ``bonbon_beta`` set at construction)."""

    def __init__(self, *args: Any, bonbon_alpha: float, bonbon_beta: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bonbon_alpha, self.bonbon_beta = bonbon_alpha, bonbon_beta

    def sequence_logps(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probabilities of the chosen and rejected completions under ``model``."""
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        shift_mask = completion_mask[..., 1:]
        per_token = outputs.log_probs[:, -shift_mask.size(1):] * shift_mask
        return per_token.sum(dim=1).chunk(2, dim=0)  # the batch is [chosen..., rejected...]

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        chosen, rejected = self.sequence_logps(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(
                self.ref_model if self.ref_model is not None else model, inputs)
        loss = bonbon_loss(chosen, rejected, ref_chosen, ref_rejected, self.bonbon_alpha, self.bonbon_beta)
        # The same reward metrics DPO logs (beta-scaled log-ratios), so runs compare side by side.
        chosen_rewards = self.bonbon_beta * (chosen - ref_chosen).detach()
        rejected_rewards = self.bonbon_beta * (rejected - ref_rejected).detach()
        gather = self.accelerator.gather
        self._metrics[mode]["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        self._metrics[mode]["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        self._metrics[mode]["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        self._metrics[mode]["rewards/accuracies"].append(
            gather((chosen_rewards > rejected_rewards).float()).mean().item())
        self._metrics[mode]["logps/chosen"].append(gather(chosen.detach()).mean().item())
        self._metrics[mode]["logps/rejected"].append(gather(rejected.detach()).mean().item())
        if not return_outputs:
            return loss
        # compute_metrics wants logits, which the fused LM head above does not build: one more
        # forward pass without gradients, as TRL's own DPO loss does.
        with torch.no_grad():
            outputs = model(**{k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS})
        return loss, outputs
