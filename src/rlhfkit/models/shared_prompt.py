"""Several responses to one prompt, with the prompt computed once.

The prompt goes through the trunk once, its key/value cache is repeated for each of its
responses, and the responses run on top of it. Gradients flow through the repeated cache
into the prompt's computation. For long prompts and short answers this removes most of the
work: a group of k answers costs P + k*A tokens instead of k*(P + A).
"""

from __future__ import annotations

import torch
from torch import nn


def shared_prompt_forward(
    trunk: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of the prompts and of their responses.

    Args:
        trunk: the decoder stack (no language-model head).
        prompt_ids, prompt_mask: left-padded prompts. Shape: (B, P)
        response_ids, response_mask: right-padded responses, the k responses of prompt b
            at rows b*k .. b*k+k-1. Shape: (B*k, A)

    Returns:
        prompt hidden states (B, P, H) and response hidden states (B*k, A, H).
    """
    per_prompt = response_ids.shape[0] // prompt_ids.shape[0]
    prompt_pos = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # (B, P)
    prompt_out = trunk(
        input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_pos, use_cache=True
    )
    cache = prompt_out.cache
    if per_prompt > 1:
        cache.batch_repeat_interleave(per_prompt)
    prompt_len = prompt_mask.sum(1).repeat_interleave(per_prompt)  # (B*k,)
    width = response_ids.shape[1]
    response_pos = prompt_len[:, None] + torch.arange(width, device=prompt_len.device)
    mask = torch.cat([prompt_mask.repeat_interleave(per_prompt, 0), response_mask], 1)
    response_hidden = trunk(
        input_ids=response_ids,
        attention_mask=mask,
        position_ids=response_pos,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return prompt_out.last_hidden_state, response_hidden
