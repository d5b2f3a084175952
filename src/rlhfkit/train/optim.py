"""The optimiser: AdamW over the trainable weights under the parallel engine, the warm-up and
decay schedule, and a checkpoint's weights put back when resuming."""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import torch

from rlhfkit.models.loading import trainable_parameters
from rlhfkit.train import checkpoint as ckpt

logger = logging.getLogger(__name__)


def lr_factor(total: int, warmup: int, schedule: str):
    """Multiplier of the peak learning rate at each step: warm-up, then the chosen decay
    (`cosine` to 10% of the peak, `linear` to 0, or `constant`)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return factor


def warmup_steps(asked: int, total: int, say: bool = True) -> int:
    """The warm-up a run of `total` steps gets: `asked`, unless the run is not longer than
    that (the learning rate would never reach its peak): then a tenth of the run, said (by
    the process that `say`s, rank 0 of a distributed run)."""
    if asked < total or total == 0:  # 0 steps: nothing to warm up
        return asked
    capped = total // 10
    if not say:
        return capped
    logger.warning(
        "warmup_steps=%d is not shorter than the run's %d steps: warming up for %d instead "
        "(a tenth of the run)",
        asked,
        total,
        capped,
    )
    return capped


class Optimization(NamedTuple):
    """What a trainer steps: the model to run training forwards through (wrapped or
    sharded), its trainable weights by name, the optimizer and the schedule."""

    train_model: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def prepare_optimization(
    parallel, model: torch.nn.Module, config: Any, total_steps: int, state: dict | None
) -> Optimization:
    """AdamW and the warm-up/decay schedule over `model`'s trainable weights, under the
    run's parallel engine (DDP, FSDP or DeepSpeed ZeRO when launched on N ranks), with a
    checkpoint's weights, optimizer, schedule and RNG states put back when resuming."""
    if state is not None:
        restore_weights(state, trainable_parameters(model))  # before the engine shards them
    train_model, optimizer = parallel.prepare(
        model,
        lambda params: torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        ),
        config.max_grad_norm,
    )
    params = trainable_parameters(model)  # FSDP replaces them with shards
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_factor(
            total_steps,
            warmup_steps(config.warmup_steps, total_steps, parallel.is_main),
            config.lr_schedule,
        ),
    )
    if state is not None:
        parallel.load_optimizer_state(params, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng(state)
    return Optimization(train_model, params, optimizer, scheduler)


def restore_weights(state: dict[str, Any], params: dict[str, torch.nn.Parameter]) -> None:
    """Put a checkpoint's trainable weights back (into the plain model, before the
    parallel engine wraps or shards it)."""
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
