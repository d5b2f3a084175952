"""Data parallelism over the processes `torchrun` (or `accelerate launch`) starts.

A run launched with WORLD_SIZE > 1 joins accelerate's process group (gloo on CPU, NCCL on
GPUs) and wraps the trainable model in PyTorch's DistributedDataParallel through
`Accelerator.prepare_model`. Every rank computes the same global batch of row indices
from (seed, step), takes its own contiguous share, runs forward and backward on it, and
DDP averages the gradients, so each optimizer step equals one over the whole batch.
Metrics are reduced across ranks; only rank 0 writes files. Checkpoints hold the full
trainable weights and optimizer state (DDP replicates them), so a run saved with one
world size resumes with another.

In a single process (no launcher) nothing is wrapped and every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch

from rlhfkit.errors import ConfigError

T = TypeVar("T")


class Parallel:
    """This process's place in a data-parallel run.

    Args:
        device: the run's `device` setting (`auto`, `cpu`, `cuda`).
        timeout_seconds: how long a collective waits for a silent rank before failing.
    """

    def __init__(self, device: str = "auto", timeout_seconds: float = 600):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.accelerator = None
        if self.world_size > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

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
                    f"the accelerate configuration asks for {kind}; rlhfkit trains with "
                    "DDP (distributed_type MULTI_GPU or MULTI_CPU, e.g. "
                    "examples/accelerate/ddp.yaml); FSDP and DeepSpeed are not supported yet"
                )

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

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to run training forwards through (DDP when distributed)."""
        if self.accelerator is None:
            return model
        import warnings

        with warnings.catch_warnings():
            # torch 2.13 prefers `forward_sync_buffers`, which accelerate cannot pass yet;
            # `broadcast_buffers=False` is the setting meant (see __init__)
            warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated")
            return self.accelerator.prepare_model(model)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module, skip: bool) -> Iterator[None]:
        """Accumulate this backward's gradients locally (all but the last micro-batch)."""
        if self.accelerator is None or not skip:
            yield
            return
        with model.no_sync():
            yield

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
            torch.manual_seed(seed * 1_000_003 + step * 7919 + self.rank)

    def _all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        device = self.accelerator.device if dist.get_backend() == "nccl" else "cpu"
        values = values.to(device)
        dist.all_reduce(values)
        return values.cpu()


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
