"""Rewards for answers from a reward-model folder: the one path every caller scores through.

`RewardTextScorer` pairs a `RewardModel` with the prompt encoder it was trained with (its
instruction and lengths), so RL, the side-by-side autorater, the graders' reward-model
backend and `rlhfkit score` read a prompt and an answer the same way. A transformers
sequence-classification folder (another tool's reward model, or rlhfkit's export) loads
through the same `RewardTextScorer.load` (see `rlhfkit.models.sequence_classifier`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.reward import (
    ResponseBatch,
    RewardModel,
    attach_reward_model,
    load_reward_model,
    read_reward_spec,
)
from rlhfkit.models.sequence_classifier import (
    SequenceClassifierScorer,
    is_transformers_reward_folder,
)


def check_reward_folder(folder: str | Path) -> None:
    """A clear ModelLoadError unless `folder` holds a reward model rlhfkit can score with."""
    if not is_transformers_reward_folder(folder):
        read_reward_spec(folder)


class RewardTextScorer:
    """A reward model and its prompt encoder; `score` gives one reward per answer."""

    def __init__(self, model: RewardModel):
        self.model = model
        tokenizer = load_tokenizer(model.spec.base_model)
        self.encoder = PromptEncoder.from_settings(tokenizer, model.spec)

    @classmethod
    def load(cls, folder: str | Path, dtype: str = "auto", device: str = "auto"):
        """The reward model in `folder` with weights of its own: rlhfkit's, or a transformers
        sequence-classification folder (`SequenceClassifierScorer`, the same `score`)."""
        if is_transformers_reward_folder(folder):
            return SequenceClassifierScorer(folder, dtype, device)
        return cls(load_reward_model(folder, dtype, device))

    @classmethod
    def attached(cls, folder: str | Path, backbone: torch.nn.Module):
        """The reward model in `folder` as an adapter on `backbone` (the policy's base)."""
        return cls(attach_reward_model(folder, backbone))

    @torch.no_grad()
    def score(
        self,
        prompts: list[tuple],
        responses: list[list[str]],
        batch_size: int = 16,
        ended: list[list[bool]] | None = None,
    ) -> list[list[float]]:
        """Rewards of k responses per prompt: `prompts` are message tuples, the result (B, k).

        `ended[b][j]` False marks an answer that was cut off (it gets no end-of-sequence
        token). Rewards are fp32 (bf16 weights are run under bf16 autocast).
        """
        model, encoder = self.model, self.encoder
        autocast = next(model.backbone.parameters()).dtype == torch.bfloat16
        pad_id = encoder.tokenizer.pad_token_id
        out: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            chunk_prompts = prompts[start : start + batch_size]
            chunk_responses = responses[start : start + batch_size]
            prompt_ids = [encoder.encode_prompt(p).ids for p in chunk_prompts]
            chunk_ended = ended[start : start + batch_size] if ended else None
            response_ids = [
                # an empty answer cut off before any text is scored as the bare end token
                encoder.encode_response(r, add_eos=chunk_ended[b][j] if chunk_ended else True).ids
                or [encoder.tokenizer.eos_token_id]
                for b, group in enumerate(chunk_responses)
                for j, r in enumerate(group)
            ]
            batch = ResponseBatch.build(prompt_ids, response_ids, pad_id).to(model.device)
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast):
                rewards = model(batch).float().cpu().view(len(chunk_prompts), -1)
            out.extend(rewards.tolist())
        return out
