"""Batched text generation from token-id prompts (left padding, KV cache)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from rlhfkit.models.decoding import generate_tokens


def padded_width(lengths: list[int], multiple: int = 1) -> int:
    """The longest length rounded up to a multiple of `multiple`.

    On CPU every new sequence length makes the math kernels build (and keep) new code and
    buffers; rounding widths to a multiple bounds the number of shapes a run sees.
    """
    longest = max(lengths)
    return -(-longest // multiple) * multiple if multiple > 1 else longest


def left_pad(
    sequences: list[list[int]], pad_id: int, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into a batch.

    Returns:
        input_ids and attention_mask. Shape: (B, P) each, P the longest prompt rounded up
        to a multiple of `multiple`.
    """
    width = padded_width([len(s) for s in sequences], multiple)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


class Answer(NamedTuple):
    """A generated answer: its text (special tokens removed), and whether the model ended
    it (False: cut at max_new_tokens)."""

    text: str
    ended: bool


def generate_text(model, tokenizer, prompts: list[list[int]], **settings) -> list[str]:
    """Generate one answer per prompt; returns the decoded answers (see `generate_answers`)."""
    return [answer.text for answer in generate_answers(model, tokenizer, prompts, **settings)]


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> list[Answer]:
    """Generate one answer per prompt, greedy unless `do_sample`."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids, attention_mask = left_pad(prompts, pad_id)
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k} if do_sample else {}
    out = generate_tokens(
        model,
        input_ids.to(model.device),
        attention_mask.to(model.device),
        max_new_tokens,
        do_sample=do_sample,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    answers = out[:, input_ids.shape[1] :]  # (B, A)
    ended = (answers == tokenizer.eos_token_id).any(dim=1)  # (B,)
    return [
        Answer(tokenizer.decode(row, skip_special_tokens=True).strip(), bool(end))
        for row, end in zip(answers, ended, strict=True)
    ]
