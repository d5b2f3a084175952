"""Direct preference optimisation: `rlhfkit train-dpo` / `train_dpo`.

The policy (a LoRA adapter on the base, or every weight) learns from preference pairs
directly, with no reward model and no sampling. The reference is the base with the
adapter off; its log-probabilities of every pair are computed once, before the first step,
and kept in the run directory (`train.reference`), so each step runs the policy alone: one
packed pass per micro-batch of pairs (`[prompt | chosen | rejected]` with a block mask),
gradients accumulated up to `batch_size` pairs. The loss is chosen by name
(`algorithms.dpo`). Validation pairs choose the kept step (`train.validated`); the
held-out pairs give the figures the run reports: implicit-reward accuracy with its
interval, split by which answer is longer.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfkit.algorithms.dpo import PairLogps, dpo_loss
from rlhfkit.models.loading import trainable_parameters
from rlhfkit.models.policy import PolicyModel, build_policy, export_full, export_merged
from rlhfkit.stats import pair_accuracy
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import autocast, prepare_decoder_blocks, sample_indices
from rlhfkit.train.dpo_config import DPOConfig
from rlhfkit.train.optim import prepare_optimization, restore_weights
from rlhfkit.train.pair_data import prepare_pair_data
from rlhfkit.train.pairs import EncodedPair, pair_batch
from rlhfkit.train.reference import (
    cache_key,
    cached_reference,
    pair_logps,
    policy_pair_sums,
    reference_pass,
)
from rlhfkit.train.reward_summary import verdict
from rlhfkit.train.validated import BestStep, PairTrainer

logger = logging.getLogger(__name__)


@dataclass
class DPOResult:
    """What a finished run produced: where the policy is, and the kept step's figures on the
    held-out pairs (`eval_accuracy`: implicit-reward accuracy, a tie counting half)."""

    run_dir: Path
    policy_dir: Path | None
    model_dir: Path | None
    eval_loss: float
    eval_accuracy: float
    eval_accuracy_ci95: list[float]
    eval_accuracy_chosen_longer: float
    eval_accuracy_chosen_shorter: float
    longer_baseline_accuracy: float
    eval_reward_margin: float
    train_pairs: int
    validation_pairs: int
    eval_pairs: int
    steps: int
    best_step: int
    stopped_early: bool
    verdict: str
    dropped_rows: list[str] = field(default_factory=list)


def train_dpo(config: DPOConfig) -> DPOResult:
    """Tune a policy on preference pairs with a DPO-family loss (`config.loss_type`)."""
    return DPOTrainer(config).run()


class PairLogpsModel(nn.Module):
    """The policy as the parallel engine trains it: a micro-batch of pairs in, the summed
    log-probabilities of each pair's two answers out. Shape: (B, 2)"""

    def __init__(self, policy: PolicyModel, pad_id: int, multiple: int):
        super().__init__()
        self.policy = policy
        self.pad_id, self.multiple = pad_id, multiple

    def forward(self, pairs: list[EncodedPair]) -> torch.Tensor:
        return pair_logps(self.policy, pairs, self.pad_id, self.multiple)


class DPOTrainer(PairTrainer):
    """The DPO run: pairs, the policy, the cached reference, the loss's steps, validation
    with the best step kept, the kept step written as policy/ and model/."""

    stage = "train-dpo"

    def __init__(self, config: DPOConfig):
        # step 1. engine, resume point, seed
        state = self._start(config)
        self.best = BestStep.from_state(state)
        self.held_out: dict[str, float] = {}
        self.held_out_at = -1
        # step 2. data: load, hold out, set validation pairs aside, encode
        self.data = prepare_pair_data(config, trains=True, use_margin=False)
        self._check_resume(state, self.data.sources)
        self.total_steps = config.total_steps(len(self.data.train))
        # step 3. the policy, the reference's log-probabilities, the optimizer
        self._build_policy(state)

    def _build_policy(self, state: dict[str, Any] | None) -> None:
        from rlhfkit.models.loading import resolve_device, resolve_dtype

        config = self.config
        device = resolve_device(config.device)
        self.autocast = resolve_dtype(config.dtype, device) == torch.bfloat16
        self.policy = self._new_policy()
        self.device = self.policy.device
        # before any step and before the engine wraps the model: the base's own weights
        self.reference = self._reference()
        prepare_decoder_blocks(
            self.policy, config.compile, device, self.parallel.sharding, self.total_steps
        )
        self.model = PairLogpsModel(self.policy, self.data.pad_id, config.pad_to_multiple)
        self.policy.train()
        self.train_model, self.params, self.optimizer, self.scheduler = prepare_optimization(
            self.parallel, self.model, config, self.total_steps, state
        )

    def _reference(self) -> dict[int, torch.Tensor]:
        """The reference's summed log-probabilities (chosen, rejected) of every pair the run
        reads, by `id(pair)`, from the run's cache where it has them."""
        config, data = self.config, self.data
        # the training pairs the run's steps take (a short run needs only those)
        used = {
            i
            for step in range(self.total_steps)
            for i in sample_indices(step, config.batch_size, len(data.train), config.seed)
        }
        splits = {
            "train": {i: data.train[i] for i in used},
            "validation": dict(enumerate(data.validation)),
            "eval": dict(enumerate(data.eval)),
        }
        key = cache_key(
            {
                "data": self.data_digest,
                "model": config.large_model_reference,
                "dtype": config.dtype,
                "encoding": [config.instruction, config.prompt_sequence_length,
                             config.target_sequence_length, config.use_chat_template],
                "splits": [config.eval_fraction, config.validation_fraction, config.seed],
            }
        )  # fmt: skip
        values = cached_reference(
            self.run_dir,
            key,
            splits,
            lambda pairs: reference_pass(
                self.policy,
                pairs,
                data.pad_id,
                config.micro_batch_tokens * 2,
                self.autocast,
                config.pad_to_multiple,
            ),
            self.parallel,
        )
        return {
            id(pair): values[name][index]
            for name, pairs in splits.items()
            for index, pair in pairs.items()
        }

    def _describe(self) -> None:
        data, config = self.data, self.config
        logger.info(
            "DPO (loss %s, beta %g): %d train pairs, %d validation pairs, %d held-out pairs, "
            "%d steps, %d trainable parameters",
            config.loss_type,
            config.beta,
            len(data.train),
            len(data.validation),
            len(data.eval),
            self.total_steps,
            sum(getattr(p, "ds_numel", p.numel()) for p in self.params.values()),
        )

    # ------------------------------------------------------------------ one step
    def _logps(self, pairs: list[EncodedPair], policy: torch.Tensor) -> PairLogps:
        """The loss's inputs for `pairs` from the policy's sums (b, 2) and the cache."""
        reference = torch.stack([self.reference[id(p)] for p in pairs]).to(policy.device)
        lengths = torch.tensor(
            [[len(p.chosen), len(p.rejected)] for p in pairs], device=policy.device
        )
        return PairLogps(
            policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
            lengths[:, 0], lengths[:, 1],
        )  # fmt: skip

    def _micro_batch_loss(
        self, pairs: list[EncodedPair]
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The DPO-family loss of a micro-batch of pairs (one packed pass of the policy)."""
        config = self.config
        tokens = pair_batch(pairs, self.data.pad_id, config.pad_to_multiple)[0].tokens
        with autocast(self.device, self.autocast):
            policy = self.train_model(pairs).float()  # (b, 2)
        logps = self._logps(pairs, policy)
        out = dpo_loss(logps, config.loss_type, config.loss_settings)
        return out.loss, _statistics(out, logps), tokens

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{stats['loss']:.3f}", "acc": f"{stats['rewards/accuracies']:.2f}"}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self, pairs: list[EncodedPair], prefix: str, policy: PolicyModel | None = None
    ) -> dict[str, float]:
        """The loss, the implicit rewards and their accuracy over every pair of `pairs`
        (each rank computes a share) under the run's policy, or `policy` (a whole copy)."""
        config = self.config
        weights = nullcontext() if policy is not None else self.parallel.full_weights(self.model)
        policy = policy or self.policy
        indices = self.parallel.spread(list(range(len(pairs))))
        share: list = []
        if indices:
            with weights:
                values = policy_pair_sums(
                    policy,
                    [pairs[i] for i in indices],
                    self.data.pad_id,
                    config.micro_batch_tokens * 2,
                    self.autocast,
                    config.pad_to_multiple,
                )
            share = [(i, *row) for i, row in zip(indices, values.tolist(), strict=True)]
        rows = sorted(self.parallel.gather(share))
        policy_sums = torch.tensor([row[1:] for row in rows], dtype=torch.float32).view(-1, 2)
        return pair_statistics(policy_sums, self._logps, pairs, config, prefix)

    def _evaluate_at(self, done: int) -> dict[str, float]:
        stats = super()._evaluate_at(done)
        if not self.data.validation:  # held-out pairs: the finish reuses them
            self.held_out, self.held_out_at = stats, done
        return stats

    # ------------------------------------------------------------------ outputs
    def _finish(self, metrics, done: int, dropped: list[str]) -> DPOResult:
        """Step 5. the kept weights become policy/ (and model/); their held-out figures."""
        from rlhfkit.tracking import read_metrics

        kept = self._kept_step(done)
        policy_dir, model_dir = self._write_policy(kept, done)
        if kept == done and self.held_out_at == done:
            held = self.held_out  # the last step's evaluation was of the held-out pairs
        else:
            held = self.evaluate(self.data.eval, "eval", self._kept_policy(kept, done))
        if not any(r["step"] == done and "best_step" in r for r in read_metrics(self.run_dir)):
            metrics.log(done, {**held, "best_step": kept})  # once, also when resumed
        data = self.data
        return DPOResult(
            run_dir=self.run_dir,
            policy_dir=policy_dir,
            model_dir=model_dir,
            eval_loss=held["eval/loss"],
            eval_accuracy=held["eval/accuracy"],
            eval_accuracy_ci95=[held["eval/accuracy_ci95_low"], held["eval/accuracy_ci95_high"]],
            eval_accuracy_chosen_longer=held["eval/accuracy_chosen_longer"],
            eval_accuracy_chosen_shorter=held["eval/accuracy_chosen_shorter"],
            longer_baseline_accuracy=held["eval/longer_baseline_accuracy"],
            eval_reward_margin=held["eval/rewards/margins"],
            train_pairs=len(data.train),
            validation_pairs=len(data.validation),
            eval_pairs=len(data.eval),
            steps=done,
            best_step=kept,
            stopped_early=done < self.total_steps,
            verdict=verdict(held),
            dropped_rows=dropped,
        )

    def _new_policy(self) -> PolicyModel:
        """The base with a fresh adapter (or every weight trainable), as the config says."""
        config = self.config
        return build_policy(
            config.large_model_reference,
            config.lora_rank,
            config.lora_alpha,
            list(config.lora_targets),
            with_value_head=False,
            dtype=config.dtype,
            device=config.device,
            seed=config.seed,
            full_finetune=config.full_finetune,
        )

    def _kept_policy(self, kept: int, done: int) -> PolicyModel | None:
        """The policy with the weights of step `kept` for the held-out figures: the run's own
        (None), put back from the kept checkpoint, or a separate copy where the run's weights
        are sharded over the ranks."""
        if kept == done:
            return None
        state = ckpt.load_checkpoint(ckpt.checkpoint_dir(self.run_dir, kept))
        if self.parallel.sharding == "none":
            restore_weights(state, trainable_parameters(self.model))
            return None
        copy = self._new_policy()
        trainable = {k.removeprefix("policy."): v for k, v in state["trainable"].items()}
        restore_weights({"trainable": trainable}, trainable_parameters(copy))
        return copy

    def _write_policy(self, kept: int, done: int) -> tuple[Path | None, Path | None]:
        """policy/ (the adapter) and model/ (merged, or the fully fine-tuned weights) from
        the weights of step `kept`."""
        config = self.config
        weights = self._kept_weights(kept, done)
        policy_dir = None if config.full_finetune else self.run_dir / "policy"
        model_dir = self.run_dir / "model" if config.save_merged or config.full_finetune else None
        if self.parallel.is_main:
            weights = {k.removeprefix("policy."): v for k, v in weights.items()}
            base = config.large_model_reference
            if policy_dir is not None:
                self.policy.save(policy_dir, weights)
                if model_dir is not None:
                    export_merged(base, policy_dir, model_dir)
            else:
                export_full(self.policy, base, weights, model_dir)
            logger.info("policy from step %d written to %s", kept, policy_dir or model_dir)
        self.parallel.barrier()
        return policy_dir, model_dir


def _statistics(out, logps: PairLogps) -> dict[str, float]:
    """A micro-batch's statistics, means over its pairs, named as TRL's DPOTrainer logs
    them: loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
    logps/chosen, logps/rejected."""
    margins = out.chosen_rewards - out.rejected_rewards
    return {
        "loss": out.loss.item(),
        "rewards/chosen": out.chosen_rewards.mean().item(),
        "rewards/rejected": out.rejected_rewards.mean().item(),
        "rewards/accuracies": (margins > 0).float().mean().item(),
        "rewards/margins": margins.mean().item(),
        "logps/chosen": logps.policy_chosen.detach().float().mean().item(),
        "logps/rejected": logps.policy_rejected.detach().float().mean().item(),
    }


def pair_statistics(
    policy: torch.Tensor, make_logps, pairs: list[EncodedPair], config: DPOConfig, prefix: str
) -> dict[str, float]:
    """`_statistics` over `pairs` from the policy's sums (N, 2), and the implicit
    rewards' accuracy with its interval, its split by length and the prefer-longer rule
    (`stats.pair_accuracy`), keys named `{prefix}/...`."""
    if not pairs:
        return {}
    logps = make_logps(pairs, policy)
    out = dpo_loss(logps, config.loss_type, config.loss_settings)
    diffs = (out.chosen_rewards - out.rejected_rewards).tolist()
    accuracy = pair_accuracy(diffs, [p.length_order for p in pairs])
    return {
        **{f"{prefix}/{key}": value for key, value in _statistics(out, logps).items()},
        **{f"{prefix}/{key}": value for key, value in accuracy.items()},
    }
