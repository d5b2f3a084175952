"""Several responses to one prompt, with the prompt computed once.

Two ways, same results. `shared_prompt_forward`: the prompt goes through the trunk once, its
key/value cache is repeated for each of its responses, and the responses run on top of it;
gradients flow through the repeated cache into the prompt's computation. `packed_forward`:
the prompt and its responses form one row and a block mask keeps the responses apart; one
pass with larger operations, faster for a preference pair on CPU. Either way a group of k
answers costs P + k*A tokens instead of k*(P + A): for long prompts and short answers this
removes most of the work.
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


PACKING_ATTENTION = {"sdpa", "rlhfkit_sdpa"}
"""Attention implementations that take a boolean (B, 1, T, T) mask as it is given."""


def supports_packing(trunk: nn.Module) -> bool:
    """Whether `packed_forward` can run on this trunk (its attention takes a block mask)."""
    config = getattr(trunk, "config", None)
    return getattr(config, "_attn_implementation", None) in PACKING_ATTENTION


def packed_mask(prompt_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Attention mask of packed rows `[prompt | response 1 | ... | response k]`.

    A prompt token sees the real prompt tokens up to itself; a response token sees the real
    prompt tokens and the real tokens of its own response up to itself. Every token also
    sees itself, so a padding row is never empty.

    Args:
        prompt_mask: 1 on prompt tokens (left-padded). Shape: (B, P)
        response_mask: 1 on response tokens (right-padded), k rows per prompt.
            Shape: (B*k, A)

    Returns:
        True where query i may attend to key j. Shape: (B, 1, T, T), T = P + k*A
    """
    batch, width = prompt_mask.shape[0], response_mask.shape[1]
    per_prompt = response_mask.shape[0] // batch
    real = torch.cat([prompt_mask, response_mask.reshape(batch, -1)], 1).bool()  # (B, T)
    segment = torch.arange(per_prompt + 1, device=real.device).repeat_interleave(
        torch.tensor([prompt_mask.shape[1]] + [width] * per_prompt, device=real.device)
    )  # (T,): 0 on the prompt, s on response s
    index = torch.arange(segment.shape[0], device=real.device)
    causal = index[None, :] <= index[:, None]  # (T, T)
    same = segment[None, :] == segment[:, None]
    from_prompt = segment[None, :] == 0
    allowed = causal & (same | from_prompt)  # (T, T)
    mask = allowed[None] & real[:, None, :]  # (B, T, T)
    return (mask | torch.eye(segment.shape[0], dtype=torch.bool, device=real.device))[:, None]


def packed_forward(
    trunk: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`shared_prompt_forward` in one pass: each prompt and its k responses are packed into
    one row, and a block mask keeps the responses apart. Same results, fewer and larger
    operations, no key/value cache; the attention spans all k responses, so this suits
    small k (a preference pair) and `shared_prompt_forward` suits large groups.

    Shapes as in `shared_prompt_forward`: prompts (B, P), responses (B*k, A); returns
    prompt hidden states (B, P, H) and response hidden states (B*k, A, H).
    """
    batch, prompt_width = prompt_ids.shape
    per_prompt = response_ids.shape[0] // batch
    width = response_ids.shape[1]
    prompt_pos = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # (B, P)
    prompt_len = prompt_mask.sum(1, keepdim=True)  # (B, 1)
    response_pos = (prompt_len + torch.arange(width, device=prompt_len.device)).repeat(
        1, per_prompt
    )  # (B, k*A)
    hidden = trunk(
        input_ids=torch.cat([prompt_ids, response_ids.reshape(batch, -1)], 1),
        attention_mask=packed_mask(prompt_mask, response_mask),
        position_ids=torch.cat([prompt_pos, response_pos], 1),
        use_cache=False,
    ).last_hidden_state  # (B, P + k*A, H)
    responses = hidden[:, prompt_width:].reshape(batch * per_prompt, width, hidden.shape[-1])
    return hidden[:, :prompt_width], responses
