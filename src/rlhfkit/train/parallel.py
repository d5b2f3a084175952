"""Data parallelism over the processes `torchrun` (or `accelerate launch`) starts.

A run launched with WORLD_SIZE > 1, or by torchrun / `rlhfkit launch` with any number of
processes (one included: the distributed code path on one GPU), joins accelerate's process
group (gloo on CPU, NCCL on GPUs). Every rank computes the same global batch of row
indices from (seed, step), takes its own contiguous share, runs forward and backward on
it, and the engine chosen by the `sharding` setting (see `rlhfkit.train.sharding`: DDP,
FSDP2 or DeepSpeed ZeRO) combines the gradients, so each optimizer step equals one over
the whole batch. Metrics are reduced across ranks; only rank 0 writes files. Checkpoints
hold the full trainable weights and optimizer state, so a run saved with one world size
(or engine) resumes with another.

In a single process started without a launcher nothing is wrapped and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch

from rlhfkit import seeding
from rlhfkit.errors import ConfigError
from rlhfkit.train.launch import started_by_torchrun
from rlhfkit.train.sharding import SHARDINGS, make_engine

T = TypeVar("T")
logger = logging.getLogger(__name__)

# what `accelerate launch --config_file ...` sets for an FSDP or DeepSpeed configuration
_ACCELERATE_SHARDING_ENV = (
    "ACCELERATE_USE_FSDP",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "ACCELERATE_DEEPSPEED_CONFIG_FILE",
)


def launcher_sharding() -> str:
    """The sharding an accelerate configuration asked for (`none` without one)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        if f"zero{stage}" not in SHARDINGS:
            raise ConfigError(
                f"the accelerate configuration asks for DeepSpeed ZeRO stage {stage}; rlhfkit "
                "runs stages 1, 2 and 3 (zero_stage in examples/accelerate/zero2.yaml)"
            )
        return f"zero{stage}"
    return "none"


def resolve_sharding(setting: str) -> str:
    """The run's `sharding` setting, or the launcher's when the setting is `none`; the two
    must agree when both are given."""
    launcher = launcher_sharding()
    if setting == "none" or setting == launcher:
        return launcher
    if launcher != "none":
        raise ConfigError(
            f"sharding={setting} but the accelerate configuration asks for {launcher}: "
            "drop one of the two, or make them the same"
        )
    return setting


class Parallel:
    """This process's place in a data-parallel run.

    Args:
        device: the run's `device` setting (`auto`, `cpu`, `cuda`).
        sharding: the run's `sharding` setting (see `rlhfkit.train.sharding.SHARDINGS`).
        timeout_seconds: how long a collective waits for a silent rank before failing.
    """

    def __init__(self, device: str = "auto", sharding: str = "none", timeout_seconds: float = 600):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.sharding = resolve_sharding(sharding)
        self.accelerator = None
        if self.world_size > 1 or started_by_torchrun():
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

            # rlhfkit runs FSDP and DeepSpeed itself (below): accelerate only joins the group
            for name in _ACCELERATE_SHARDING_ENV:
                os.environ.pop(name, None)
            cpu = device == "cpu" or not torch.cuda.is_available()
            self.accelerator = Accelerator(
                cpu=cpu,
                kwargs_handlers=[
                    InitProcessGroupKwargs(
                        backend="gloo" if cpu else "nccl",
                        timeout=timedelta(seconds=timeout_seconds),
                    ),
                    # ranks run different numbers of no-sync micro-batches; buffers (rotary
                    # tables) are constants, so no broadcast per forward
                    DistributedDataParallelKwargs(broadcast_buffers=False),
                ],
            )
            self.rank = self.accelerator.process_index
            kind = self.accelerator.distributed_type.value
            if not kind.startswith("MULTI_"):
                raise ConfigError(
                    f"the accelerate configuration asks for {kind}; rlhfkit trains "
                    "data-parallel over processes (distributed_type MULTI_GPU or MULTI_CPU, "
                    "FSDP or DEEPSPEED; see examples/accelerate/)"
                )
            if self.is_main:
                logger.info(
                    "data-parallel over %d processes (%s), sharding=%s",
                    self.world_size,
                    "gloo" if cpu else "nccl",
                    self.sharding,
                )
        elif self.sharding != "none":
            logger.info("sharding=%s: one process holds everything, nothing to shard", sharding)
        self.engine = make_engine(self.sharding, self.accelerator)

    @property
    def distributed(self) -> bool:
        return self.accelerator is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    def check_divides(self, **sizes: int) -> None:
        """Every global batch size must split evenly over the ranks."""
        for name, size in sizes.items():
            if size % self.world_size:
                raise ConfigError(
                    f"{name}={size} does not split over {self.world_size} processes; use a "
                    f"multiple of {self.world_size} (each process takes an equal share)"
                )

    def shard(self, items: list[T]) -> list[T]:
        """This rank's contiguous share of a global batch (the sizes divide evenly)."""
        share = len(items) // self.world_size
        return items[self.rank * share : (self.rank + 1) * share]

    def spread(self, items: list[T]) -> list[T]:
        """Every `world_size`-th item from this rank's: for work such as evaluation, where
        shares may differ by one."""
        return items[self.rank :: self.world_size]

    def prepare(
        self,
        model: torch.nn.Module,
        make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
        max_grad_norm: float,
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """(the model to run training forwards through, the optimizer to schedule): the
        engine wraps or shards `model` and builds the optimizer over its trainable weights
        (restore checkpointed weights into `model` before this)."""
        return self.engine.prepare(model, make_optimizer, max_grad_norm)

    def micro_batch(self, train_model: torch.nn.Module, last: bool):
        """Context for one micro-batch's forward and backward: gradients are combined over
        the ranks in the `last` one only."""
        return self.engine.micro_batch(train_model, last)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self, params: dict[str, torch.nn.Parameter]) -> float:
        """Clip the gradients, step the optimizer, clear the gradients; returns the norm."""
        return self.engine.step(params)

    def full_weights(self, model: torch.nn.Module):
        """Context for passes without gradients (evaluation, generation): every weight is
        present on every rank, so ranks may run different numbers of forwards."""
        return self.engine.full_weights(model)

    def micro_batch_count(self, count: int) -> int:
        """How many micro-batches this rank must run: its own `count`, or the most over the
        ranks when the engine gathers weights in each forward (they must run in step)."""
        if self.accelerator is None or not self.engine.gathers_in_forward:
            return count
        import torch.distributed as dist

        value = torch.tensor([count], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value.item())

    def trainable_state(self, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """Full trainable weights by name on the CPU: every rank calls it, rank 0 gets them
        (the others may get an empty dict)."""
        if not self.engine.state_is_collective and not self.is_main:
            return {}
        return self.engine.trainable_state(params)

    def optimizer_state(self, params: dict[str, torch.nn.Parameter]) -> dict[str, Any]:
        """The optimizer state as one process's AdamW state dict: every rank calls it, rank 0
        gets it (the others may get an empty dict)."""
        if not self.engine.state_is_collective and not self.is_main:
            return {}
        return self.engine.optimizer_state(params)

    def load_optimizer_state(self, params: dict[str, torch.nn.Parameter], state: dict) -> None:
        self.engine.load_optimizer_state(params, state)

    def reduce(self, stats: dict[str, float]) -> dict[str, float]:
        """One step's statistics over the ranks: throughputs (`*_per_second`) add up, every
        other statistic is averaged (equal shares: the mean over the whole batch)."""
        if self.accelerator is None:
            return stats
        keys = sorted(stats)
        values = self._all_reduce(
            torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        )
        return {
            k: v if k.endswith("_per_second") else v / self.world_size
            for k, v in zip(keys, values.tolist(), strict=True)
        }

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the ranks (float64 on the CPU, a copy)."""
        if self.accelerator is None:
            return values.clone()
        return self._all_reduce(values.detach().to("cpu", torch.float64))

    def gather(self, values: list[Any]) -> list[Any]:
        """Every rank's list, concatenated in rank order (shares may differ in length)."""
        if self.accelerator is None:
            return list(values)
        import torch.distributed as dist

        gathered: list[list[Any] | None] = [None] * self.world_size
        dist.all_gather_object(gathered, list(values))
        return [value for part in gathered for value in part]

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def seed_sampling(self, seed: int, step: int) -> None:
        """Give ranks other than 0 their own random stream for sampling (rank 0 keeps the
        single-process one), also after a resume restored rank 0's saved state."""
        if self.rank:
            seeding.seed_global(seeding.rank_sampling(seed, step, self.rank))

    def _all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        values = values.to(self._collective_device())
        dist.all_reduce(values)
        return values.cpu()

    def _collective_device(self) -> torch.device | str:
        import torch.distributed as dist

        return self.accelerator.device if dist.get_backend() == "nccl" else "cpu"


def leave_process_group() -> None:
    """After a distributed run: wait for every rank, then leave the process group (a
    process that exits while still in it can abort)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def peer_failure(exc: BaseException) -> str | None:
    """A one-line account of an error that means another rank is gone (its connection
    closed, a collective timed out), else None."""
    import torch.distributed as dist

    text = str(exc)
    markers = ("gloo", "NCCL", "Connection closed by peer", "Connection reset", "timed out")
    if isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(m in text for m in markers)
    ):
        detail = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return f"lost contact with another process of the run ({detail[:200]})"
    return None


def whiten(parallel: Parallel, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`masked_whiten` with the mean and variance of the whole batch over every rank.
    Shape: (B, A) -> (B, A)"""
    from rlhfkit.algorithms.ppo import masked_whiten

    if not parallel.distributed:
        return masked_whiten(values, mask)
    mask = mask.to(values.dtype)
    sums = parallel.sum(torch.stack([(values * mask).sum(), (values**2 * mask).sum(), mask.sum()]))
    total, squares, count = sums.tolist()
    mean = total / count
    var = (squares / count - mean * mean) * (count / (count - 1) if count > 1 else 1.0)
    return (values - mean) * torch.rsqrt(torch.tensor(max(var, 0.0) + 1e-8)) * mask
