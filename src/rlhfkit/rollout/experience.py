"""`Experience`: the per-answer tensors an RL update reads, one row per sampled answer."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Experience:
    """One step's training targets, on the CPU. N answers, A answer tokens (right-padded).

    Attributes:
        mask: 1.0 on the answer tokens that enter the loss (the end-of-sequence token
            included); an answer left out of the loss (GRPO's mask_truncated_completions,
            skip_zero_std_groups) is 0 throughout. Shape: (N, A)
        advantages: the advantage of each answer token. Shape: (N, A)
        old_logprobs: log-probabilities under the policy that sampled the answers. When
            the first epoch's forward passes provide them (`record_old` in the update),
            they are written in as that epoch goes. Shape: (N, A)
        entropy: the sampling policy's entropy at each token, or None. Shape: (N, A)
        old_values: the critic's values at sampling time (PPO), or None. Shape: (N, A)
        returns: the critic's targets (PPO), or None. Shape: (N, A)
        ref_logprobs: log-probabilities under the reference model, for a KL term in the
            loss (GRPO / RLOO with kl_coeff > 0), or None. Shape: (N, A)
    """

    mask: torch.Tensor
    advantages: torch.Tensor
    old_logprobs: torch.Tensor
    entropy: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None

    def rows(self, rows: torch.Tensor, width: int, device: torch.device) -> Experience:
        """The given answers, cut to their first `width` tokens, on `device`."""
        parts = {}
        for f in fields(self):
            value = getattr(self, f.name)
            parts[f.name] = None if value is None else value[rows][:, :width].to(device)
        return replace(self, **parts)

    def record_old(self, rows: torch.Tensor, logprobs: torch.Tensor, entropy) -> None:
        """Write the sampling policy's log-probabilities (and entropy) of `rows`, computed
        by the first update's forward pass, into their first columns. (b, w) each."""
        width = logprobs.shape[1]
        self.old_logprobs[rows, :width] = logprobs.detach().float().cpu()
        if entropy is not None and self.entropy is not None:
            self.entropy[rows, :width] = entropy.detach().float().cpu()
