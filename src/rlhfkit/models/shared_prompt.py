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

from dataclasses import dataclass

import torch
from torch import nn

from rlhfkit.models.generate import padded_width
from rlhfkit.models.lean import LEAN_ATTENTION


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


PACKING_ATTENTION = {"sdpa", LEAN_ATTENTION}
"""Attention implementations that take a boolean (B, 1, T, T) mask as it is given."""


def supports_packing(trunk: nn.Module) -> bool:
    """Whether `packed_forward` can run on this trunk (its attention takes a block mask)."""
    config = getattr(trunk, "config", None)
    return getattr(config, "_attn_implementation", None) in PACKING_ATTENTION


@dataclass
class PackedRows:
    """Each prompt followed by its k responses in one row, with no padding between them.

    Attributes:
        ids: token ids; the row's tail past its last token is padding. Shape: (B, T)
        positions: position of each token (a response continues from the prompt's end;
            every response of a row starts at the same position). Shape: (B, T)
        segments: 0 on the prompt, s on response s (1..k), -1 on padding. Shape: (B, T)
        prompt_index: where each prompt token sits in its row (padding: 0). Shape: (B, P)
        response_index: where each response token sits in its row, row b*k+s-1 of the
            padded responses reading row b of the packed ones (padding: 0). Shape: (B*k, A)
    """

    ids: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor
    prompt_index: torch.Tensor
    response_index: torch.Tensor


def pack_rows(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    multiple: int = 1,
) -> PackedRows:
    """Pack left-padded prompts (B, P) and right-padded responses (B*k, A) into rows of
    `[prompt | response 1 | ... | response k]`, padded at the end to the longest row rounded
    up to `multiple`."""
    batch, prompt_width = prompt_ids.shape
    per_prompt = response_ids.shape[0] // batch
    prompt_lengths = prompt_mask.sum(1).tolist()  # one transfer, not one per row
    response_lengths = response_mask.sum(1).view(batch, per_prompt).tolist()
    rows = [p + sum(r) for p, r in zip(prompt_lengths, response_lengths, strict=True)]
    width = padded_width(rows, multiple)
    ids = torch.zeros((batch, width), dtype=prompt_ids.dtype, device=prompt_ids.device)
    positions = torch.zeros_like(ids)
    segments = torch.full_like(ids, -1)
    prompt_index = torch.zeros_like(prompt_ids)
    response_index = torch.zeros_like(response_ids)
    arange = torch.arange(width, device=ids.device)
    for b, (length, sizes) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        ids[b, :length] = prompt_ids[b, prompt_width - length :]  # left-padded: real at the end
        positions[b, :length] = arange[:length]
        segments[b, :length] = 0
        prompt_index[b, prompt_width - length :] = arange[:length]
        end = length
        for s, size in enumerate(sizes):
            row = b * per_prompt + s
            ids[b, end : end + size] = response_ids[row, :size]
            positions[b, end : end + size] = arange[length : length + size]
            segments[b, end : end + size] = s + 1
            response_index[row, :size] = arange[end : end + size]
            end += size
    return PackedRows(ids, positions, segments, prompt_index, response_index)


def packed_mask(segments: torch.Tensor) -> torch.Tensor:
    """Attention mask of packed rows (see `PackedRows`).

    A prompt token sees the prompt up to itself; a response token sees the prompt and its
    own response up to itself, never another response; nothing sees padding, and padding
    sees only itself (so no row of the mask is empty).

    Args:
        segments: 0 on the prompt, s on response s, -1 on padding. Shape: (B, T)

    Returns:
        True where query i may attend to key j. Shape: (B, 1, T, T)
    """
    width = segments.shape[1]
    index = torch.arange(width, device=segments.device)
    causal = index[None, :] <= index[:, None]  # (T, T)
    query, key = segments[:, :, None], segments[:, None, :]  # (B, T, 1), (B, 1, T)
    allowed = causal[None] & ((key == query) | (key == 0)) & (key >= 0) & (query >= 0)  # (B, T, T)
    return (allowed | torch.eye(width, dtype=torch.bool, device=segments.device))[:, None]


def packed_forward(
    trunk: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    multiple: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`shared_prompt_forward` in one pass: each prompt and its k responses are packed into
    one row with no padding between them (`pack_rows`), and a block mask keeps the responses
    apart. Same results, fewer and larger operations, no key/value cache, no compute on
    inner padding; the attention spans all k responses, so this suits small k (a
    preference pair) and `shared_prompt_forward` suits large groups.

    Shapes as in `shared_prompt_forward`: prompts (B, P), responses (B*k, A); returns
    prompt hidden states (B, P, H) and response hidden states (B*k, A, H), whose padding
    positions hold arbitrary values. Packed rows are padded to a multiple of `multiple`.
    """
    rows = pack_rows(prompt_ids, prompt_mask, response_ids, response_mask, multiple)
    hidden = trunk(
        input_ids=rows.ids,
        attention_mask=packed_mask(rows.segments),
        position_ids=rows.positions,
        use_cache=False,
    ).last_hidden_state  # (B, T, H)
    batch, per_prompt = prompt_ids.shape[0], response_ids.shape[0] // prompt_ids.shape[0]
    rows_of_responses = torch.arange(batch, device=hidden.device).repeat_interleave(per_prompt)
    prompts = hidden[torch.arange(batch, device=hidden.device)[:, None], rows.prompt_index]
    return prompts, hidden[rows_of_responses[:, None], rows.response_index]
