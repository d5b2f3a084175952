"""What the untrained model's hidden states know about the demo's preferences, layer by layer.

For each decoder layer's output (0 = the token embeddings, the last = the final hidden state
the reward head reads) and three poolings of the answer's tokens (their mean, the
end-of-sequence token, the token before it), a linear Bradley-Terry head is fitted on the
demo's training pairs exactly as `head_warm_start` fits it (`fit_linear_head`) and scored
on the demo's held-out pairs (the split `make demo` makes: eval_fraction 0.3, seed 0; `--seed`
gives the split `rlhfkit run ... seed=N` makes). No training step: this measures what the
features carry, the ceiling of the fitted head.

    RLHFKIT_HOME=... .venv/bin/python bench/layer_probe.py --seed 0   # about 9 minutes on 2 cores

The features of every pair are cached in bench/results/tmp/ (named by the preference file's
digest), so another seed or a second run only refits. `bench/judge_probe.py` reuses them.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from rlhfkit.algorithms.reward import fit_linear_head
from rlhfkit.models.reward import build_reward_model
from rlhfkit.models.shared_prompt import pack_rows, packed_mask
from rlhfkit.stats import wilson_interval
from rlhfkit.train.pair_data import prepare_pair_data
from rlhfkit.train.pairs import EncodedPair, micro_batches, pair_batch
from rlhfkit.train.reward_config import RewardConfig, reward_spec

POOLINGS = ("mean", "eos", "before eos")


def cache_path(config: RewardConfig) -> Path:
    digest = hashlib.sha256(Path(config.preference_dataset).read_bytes()).hexdigest()[:12]
    return Path(f"bench/results/tmp/layer_probe-{digest}.pt")


def demo_config(seed: int = 0) -> RewardConfig:
    return RewardConfig(
        seed=seed,
        preference_dataset="examples/demo/preferences.jsonl",
        instruction="Summarize in less than 40 words.",
        prompt_sequence_length=512,
        target_sequence_length=64,
        reward_model_train_steps=0,
        eval_fraction=0.3,
        validation_fraction=0,
    )


@torch.no_grad()
def layer_features(model, pairs: list[EncodedPair], pad_id: int, max_tokens: int) -> torch.Tensor:
    """Pooled answer features of every layer. Shape: (N pairs, 2 answers, layers, poolings, H)"""
    trunk, out = model.trunk, [None] * len(pairs)
    position = {id(pair): index for index, pair in enumerate(pairs)}
    for chunk in micro_batches(pairs, max_tokens, 16):
        batch, _ = pair_batch(chunk, pad_id, 16)
        rows = pack_rows(
            batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask, 16
        )
        states = trunk(
            input_ids=rows.ids,
            attention_mask=packed_mask(rows.segments),
            position_ids=rows.positions,
            use_cache=False,
            output_hidden_states=True,
        ).hidden_states
        answer_rows = torch.arange(len(chunk)).repeat_interleave(2)[:, None]
        mask = batch.response_mask.unsqueeze(-1).float()  # (2B, A, 1)
        last = (batch.response_mask.sum(1) - 1).clamp(min=0)  # (2B,)
        every = torch.arange(len(last))
        pooled = []
        for state in states:
            answer = state[answer_rows, rows.response_index].float()  # (2B, A, H)
            mean = (answer * mask).sum(1) / mask.sum(1)
            pooled.append(
                torch.stack([mean, answer[every, last], answer[every, (last - 1).clamp(min=0)]])
            )
        per_pair = torch.stack(pooled).view(len(states), len(POOLINGS), len(chunk), 2, -1)
        for j, pair in enumerate(chunk):
            out[position[id(pair)]] = per_pair[:, :, j].permute(2, 0, 1, 3).half()
    return torch.stack(out)


def pair_key(pair: EncodedPair) -> tuple:
    return (tuple(pair.prompt), tuple(pair.chosen), tuple(pair.rejected))


def features(config: RewardConfig, data) -> dict[str, torch.Tensor]:
    """Every layer's pooled features of the training and held-out pairs, cached per pair."""
    cache = cache_path(config)
    everything = data.train + data.eval
    if cache.exists():
        by_pair = torch.load(cache)
    else:
        model = build_reward_model(reward_spec(config), "auto", "auto", 0.0, 0).eval()
        pooled = layer_features(model, everything, data.pad_id, config.micro_batch_tokens * 2)
        by_pair = {pair_key(pair): row for pair, row in zip(everything, pooled, strict=True)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(by_pair, cache)
    return {
        split: torch.stack([by_pair[pair_key(pair)] for pair in pairs])
        for split, pairs in (("train", data.train), ("eval", data.eval))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the split of `run ... seed=N`")
    config = demo_config(parser.parse_args().seed)
    data = prepare_pair_data(config, False, config.use_margin)
    cached = features(config, data)
    train, held = cached["train"].float(), cached["eval"].float()
    margins = torch.tensor([p.margin for p in data.train])
    order = torch.tensor([p.length_order for p in data.eval])
    print(f"{len(data.train)} training pairs, {len(data.eval)} held-out pairs")
    print(
        "| layer | pooling | training pairs, 5-fold cross-validated accuracy | held-out "
        "accuracy (95% interval) | chosen longer / shorter |"
    )
    print("|---|---|---|---|---|")
    layers = train.shape[2]
    for pooling, name in enumerate(POOLINGS):
        for layer in sorted({*range(0, layers, 3), layers - 1}):
            fit = fit_linear_head(
                train[:, 0, layer, pooling] - train[:, 1, layer, pooling], margins
            )
            gap = (held[:, 0, layer, pooling] - held[:, 1, layer, pooling]) @ fit.weight.view(-1)
            right = (gap > 0).float() + 0.5 * (gap == 0).float()
            low, high = wilson_interval(right.sum().item(), len(right))
            print(
                f"| {layer} | {name} | {fit.cv_accuracy:.3f} | {right.mean():.3f} "
                f"({low:.3f}-{high:.3f}) | "
                f"{right[order == 1].mean():.3f} / {right[order == -1].mean():.3f} |"
            )


if __name__ == "__main__":
    main()
