"""How a data-parallel run holds the trainable model: replicated (DDP) or sharded.

Each engine below takes the plain model and optimizer and gives the training loop the same
five operations: a micro-batch context, `backward`, `step` (clipping included), a context
with every weight present for passes without gradients (evaluation, generation), and the
full trainable state for checkpoints and the saved model.

- `none`: DistributedDataParallel through accelerate; every rank holds everything.
- `fsdp`: PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`), one unit per decoder layer
  plus the root: parameters, gradients and optimizer state are split over the ranks.
- `zero1`, `zero2`, `zero3`: DeepSpeed ZeRO stages (optimizer state; + gradients;
  + parameters), with our own AdamW as DeepSpeed's client optimizer.

Checkpoints are engine-independent: full trainable weights by name and a
`torch.optim.AdamW` state dict, so a run saved under one engine and world size resumes
under any other.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from rlhfkit.errors import ConfigError
from rlhfkit.models.loading import decoder_blocks, trainable_parameters

SHARDINGS = ("none", "fsdp", "zero1", "zero2", "zero3")

MakeOptimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def sharding_param() -> Any:
    """The `sharding` field every training config has (documented once, here)."""
    from rlhfkit.config import param

    return param(
        "none",
        "How a run on several processes holds the model: none (DDP replicas), fsdp (PyTorch "
        "FSDP2), zero1, zero2 or zero3 (DeepSpeed ZeRO); an accelerate FSDP or DeepSpeed "
        "configuration sets it too.",
        SHARDINGS,
    )


class Replicated:
    """Every rank holds the whole model (DDP when distributed, nothing in one process)."""

    gathers_in_forward = False
    """Each forward all-gathers weights: ranks must run the same number of forwards."""
    state_is_collective = False
    """Reading the full trainable state takes every rank."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.optimizer: torch.optim.Optimizer | None = None

    def prepare(self, model: nn.Module, make_optimizer: MakeOptimizer, max_grad_norm: float):
        self.max_grad_norm = max_grad_norm
        train_model = model
        if self.accelerator is not None:
            with warnings.catch_warnings():
                # torch 2.13 prefers `forward_sync_buffers`, which accelerate cannot pass
                # yet; `broadcast_buffers=False` is the setting meant (see Parallel)
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated")
                train_model = self.accelerator.prepare_model(model)
        self.optimizer = make_optimizer(list(trainable_parameters(model).values()))
        return train_model, self.optimizer

    @contextlib.contextmanager
    def micro_batch(self, train_model: nn.Module, last: bool) -> Iterator[None]:
        """Gradients are averaged over the ranks once, in the last micro-batch's backward."""
        if self.accelerator is None or last:
            yield
            return
        with train_model.no_sync():
            yield

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, params: dict[str, nn.Parameter]) -> float:
        """Clip, take the optimizer step, clear the gradients; returns the gradient norm."""
        norm = clip_norm(list(params.values()), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def full_weights(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def trainable_state(self, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in params.items()}

    def optimizer_state(self, params: dict[str, nn.Parameter]) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, params: dict[str, nn.Parameter], state: dict) -> None:
        self.optimizer.load_state_dict(state)


class FullyShardedDataParallel(Replicated):
    """PyTorch FSDP2: one unit per decoder layer and the root for the rest (embeddings,
    final norm, heads; tied weights stay together there)."""

    gathers_in_forward = True
    state_is_collective = True

    def prepare(self, model: nn.Module, make_optimizer: MakeOptimizer, max_grad_norm: float):
        from torch.distributed.fsdp import fully_shard

        # the models return their outputs (logits, rewards) as views and never change
        # them in place, which is what this warning is about
        warnings.filterwarnings("ignore", "FSDP2-wrapped module .* returned a view tensor")
        self.max_grad_norm = max_grad_norm
        for block in decoder_blocks(model):
            fully_shard(block)
        fully_shard(model)
        # make `model` the root now: generation may run the decoder blocks before the
        # model's own forward, and a block that runs first would take the root's place
        model._get_fsdp_state()._lazy_init()
        self.optimizer = make_optimizer(list(trainable_parameters(model).values()))
        return model, self.optimizer

    @contextlib.contextmanager
    def micro_batch(self, train_model: nn.Module, last: bool) -> Iterator[None]:
        """Gradients are reduce-scattered in the last micro-batch's backward only."""
        train_model.set_requires_gradient_sync(last)
        try:
            yield
        finally:
            train_model.set_requires_gradient_sync(True)

    @contextlib.contextmanager
    def full_weights(self, model: nn.Module) -> Iterator[None]:
        """All-gather every unit once and keep it whole until the block ends, so ranks may
        run different numbers of forwards (evaluation shares, generation lengths)."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        model.set_reshard_after_forward(False)
        for unit in units:
            unit.unshard()
        try:
            yield
        finally:
            model.set_reshard_after_forward(True)
            for unit in units:
                unit.reshard()

    def trainable_state(self, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        return {name: _full(p.detach()).cpu() for name, p in params.items()}

    def optimizer_state(self, params: dict[str, nn.Parameter]) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        state["state"] = {
            index: {key: _full(value).cpu() for key, value in entry.items()}
            for index, entry in state["state"].items()
        }
        return state

    def load_optimizer_state(self, params: dict[str, nn.Parameter], state: dict) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        shaped = list(params.values())
        local = {**state, "state": {}}
        for index, entry in state["state"].items():
            p = shaped[index]
            local["state"][index] = {
                key: distribute_tensor(value, p.device_mesh, p.placements)
                if isinstance(p, DTensor) and value.shape == p.shape
                else value
                for key, value in entry.items()
            }
        self.optimizer.load_state_dict(local)


class DeepSpeedZero(Replicated):
    """DeepSpeed's ZeRO engine at `stage` 1, 2 or 3, driving our AdamW (client optimizer):
    the engine reduces, clips and steps; rlhfkit still weights each micro-batch's loss."""

    state_is_collective = True

    def __init__(self, accelerator, stage: int):
        super().__init__(accelerator)
        self.stage = stage
        self.gathers_in_forward = stage == 3

    def prepare(self, model: nn.Module, make_optimizer: MakeOptimizer, max_grad_norm: float):
        deepspeed = import_deepspeed(f"zero{self.stage}")
        # DeepSpeed 0.19 still calls the collectives torch 2.13 renamed, once per call
        for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
            warnings.filterwarnings(
                "ignore", f"`torch.distributed.{name}` is deprecated", FutureWarning
            )
        self.optimizer = make_optimizer(list(trainable_parameters(model).values()))
        config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,  # rlhfkit weights the micro-batch losses
            "gradient_clipping": max_grad_norm,
            "zero_optimization": {"stage": self.stage},
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": False},  # autocast; trainable weights stay fp32
            "steps_per_print": 1 << 30,
        }
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=self.optimizer, config=config)
        return self.engine, self.optimizer

    @contextlib.contextmanager
    def micro_batch(self, train_model: nn.Module, last: bool) -> Iterator[None]:
        self.engine.set_gradient_accumulation_boundary(last)
        yield

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self, params: dict[str, nn.Parameter]) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def full_weights(self, model: nn.Module) -> contextlib.AbstractContextManager:
        if self.stage < 3:
            return contextlib.nullcontext()
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        return unwrap_model_for_generation(self.engine)

    def trainable_state(self, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        from deepspeed.utils import safe_get_full_fp32_param

        return {name: safe_get_full_fp32_param(p).cpu().clone() for name, p in params.items()}

    def optimizer_state(self, params: dict[str, nn.Parameter]) -> dict[str, Any]:
        """The AdamW state dict a single process would have: full moments per parameter."""
        from deepspeed.utils import safe_get_full_optimizer_state

        groups = self.optimizer.param_groups
        state: dict[int, dict[str, torch.Tensor]] = {}
        step = _adam_step(self.optimizer)
        if step is not None:
            for index, p in enumerate(params.values()):
                state[index] = {
                    "step": step.clone(),
                    "exp_avg": safe_get_full_optimizer_state(p, "exp_avg").cpu().clone(),
                    "exp_avg_sq": safe_get_full_optimizer_state(p, "exp_avg_sq").cpu().clone(),
                }
        hyper = {k: v for k, v in groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**hyper, "params": list(range(len(params)))}]}

    def load_optimizer_state(self, params: dict[str, nn.Parameter], state: dict) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        hyper = {k: v for k, v in state["param_groups"][0].items() if k != "params"}
        for group in self.optimizer.param_groups:
            group.update(hyper)
        if not state["state"]:
            return
        step = next(iter(state["state"].values()))["step"]
        # AdamW makes its state at the first step; make it now, on this rank's flat fp32
        # partitions (ZeRO-3 and ZeRO-1/2 name them differently), then fill it per parameter
        zero = self.engine.optimizer
        flats = getattr(zero, "fp32_partitioned_groups_flat", None)
        for flat in flats if flats is not None else zero.single_partition_of_fp32_groups:
            self.optimizer.state[flat] = {
                "step": step.clone(),
                "exp_avg": torch.zeros_like(flat),
                "exp_avg_sq": torch.zeros_like(flat),
            }
        if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2: link it
            zero._lazy_init_hp_params_optimizer_state()
        for index, p in enumerate(params.values()):
            for key in ("exp_avg", "exp_avg_sq"):
                value = state["state"][index][key]
                if hasattr(p, "ds_tensor"):
                    _set_zero3_state(p, value, key)
                else:
                    safe_set_full_optimizer_state(p, value, key)


def _set_zero3_state(param: nn.Parameter, value: torch.Tensor, key: str) -> None:
    """Copy this rank's slice of a full optimizer-state tensor into a ZeRO-3 partition.

    DeepSpeed's own setter (`safe_set_full_optimizer_state`) slices past the end when a
    parameter does not fill the last rank's partition (e.g. a 1-element bias on 2 ranks).
    """
    import torch.distributed as dist

    part, _ = param._z3_optimizer._get_fp32_opt_state_partition(
        param, release_swap_buffers=False, optim_state_key=key
    )
    start = param.ds_tensor.ds_numel * dist.get_rank()
    piece = value.flatten()[start : start + part.numel()]
    with torch.no_grad():
        part.zero_()
        part[: piece.numel()].copy_(piece)


def make_engine(sharding: str, accelerator) -> Replicated:
    """The engine for a `sharding` name (see SHARDINGS); one process always replicates."""
    if accelerator is None or sharding == "none":
        return Replicated(accelerator)
    if sharding == "fsdp":
        return FullyShardedDataParallel(accelerator)
    if sharding in ("zero1", "zero2", "zero3"):
        return DeepSpeedZero(accelerator, int(sharding[-1]))
    raise ValueError(f"sharding={sharding!r}: choose one of {', '.join(SHARDINGS)}")


def import_deepspeed(sharding: str):
    try:
        import deepspeed
    except ImportError as exc:
        raise ConfigError(
            f"sharding={sharding} trains with DeepSpeed, which is not installed: "
            "pip install 'rlhfkit[deepspeed]' (or choose sharding=fsdp, which needs only "
            "PyTorch)"
        ) from exc
    return deepspeed


def clip_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the gradients' global norm to `max_norm` (0: no clipping); returns the norm,
    whole even when the gradients are sharded."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(_full(torch.nn.utils.clip_grad_norm_(grads, max_norm)))
    return float(_full(torch.nn.utils.get_total_norm([p.grad for p in grads])))


def _full(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (all-gathered), or the tensor itself."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def _adam_step(optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """AdamW's step count (every parameter shares it), None before the first step."""
    for entry in optimizer.state.values():
        if "step" in entry:
            return torch.as_tensor(entry["step"], dtype=torch.float32).cpu()
    return None
