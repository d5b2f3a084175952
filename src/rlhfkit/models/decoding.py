"""Token-by-token generation made cheaper on CPU: prepacked weights and a reserved cache.

A decode step reads every weight of the model to produce one token per row. With 8 rows
the matrix products are far too small to be limited by arithmetic, so the time goes into
reading weights and into fixed costs per operation. Two of those costs are avoidable:

- `packed_linears`: oneDNN reads a weight faster in its own blocked layout than in
  PyTorch's row-major one. Each linear layer's weight is reordered once per generation
  call (`torch.ops.mkldnn._reorder_linear_weight`, what inductor's weight freezing uses)
  and the layer runs on the packed copy. Measured on SmolLM2-135M's shapes at 8 rows on a
  2-core AVX512-BF16 CPU: 10 GB/s of weights read become 16-20 GB/s. The packed copy is
  made in the dtype the layer computes in (bf16 under bf16 autocast), so a model kept in
  fp32 under autocast stops casting every weight at every token.
- `ReservedCache` (CPU, decoders with full attention in every layer): transformers'
  dynamic cache concatenates every layer's keys and values with the new token at each
  step, copying the whole cache each time (about a sixth of a decode step at 8 rows and
  ~380 cached tokens). The reserved cache writes each token into a buffer with room for
  the whole answer and hands attention views of it.

The attention of a single new token is handled in `rlhfkit.models.lean` (two small matrix
products instead of the fused kernel, which costs ~1.3 ms per call for one query row).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

PACK_MEMORY_SHARE = 0.25
"""Weights are packed only when the packed copies take at most this share of the memory
the system has available (a second copy of the weights lives while generation runs)."""


def _available_memory() -> int:
    """Bytes of memory the system can give without swapping."""
    import psutil  # a dependency of accelerate

    return psutil.virtual_memory().available


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `packed_linears` packs weights of `dtype` on `device` (CPU with oneDNN)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype == torch.float32


@contextmanager
def packed_linears(model: nn.Module, rows: int) -> Iterator[None]:
    """Run `model`'s linear layers on weights prepacked for oneDNN, for `rows` rows at a
    time, until the block ends (CPU only; elsewhere nothing changes).

    Meant for passes without gradients whose weights do not change meanwhile (generation);
    the weights are read as they are on entry. Costs one extra copy of the weights while
    the block runs: nothing is packed when that copy would take more than
    `PACK_MEMORY_SHARE` of the memory available.
    """
    compute = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    chosen = []
    for module in model.modules():
        if type(module) is not nn.Linear or isinstance(vars(module).get("forward"), _PackedLinear):
            continue  # not a plain linear layer, or packed already by an outer block
        dtype = compute or module.weight.dtype
        if can_pack(module.weight.device, dtype):
            chosen.append((module, dtype))
    copy_bytes = sum(module.weight.numel() * dtype.itemsize for module, dtype in chosen)
    if copy_bytes > PACK_MEMORY_SHARE * _available_memory():
        chosen = []
    patched: list[tuple[nn.Linear, object]] = []
    try:
        for module, dtype in chosen:
            previous = vars(module).get("forward")  # a forward a hook set on the instance
            module.forward = _PackedLinear(module, dtype, rows)
            patched.append((module, previous))
        yield
    finally:
        for module, previous in patched:
            if previous is None:
                del module.forward
            else:
                module.forward = previous


class _PackedLinear:
    """A linear layer's forward on its weight in oneDNN's layout."""

    def __init__(self, layer: nn.Linear, dtype: torch.dtype, rows: int):
        weight = layer.weight.detach().to(dtype)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        self.bias = None if layer.bias is None else layer.bias.detach().to(dtype)
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


class ReservedLayer(DynamicLayer):
    """A dynamic cache layer that writes new keys and values into a buffer with `room`
    spare positions, so adding a token copies only that token.

    `keys` and `values` are views of the buffer, as long as the cached sequence. Repeating
    rows (several answers per prompt) writes straight into a new buffer with room. Other
    changes from outside that replace the tensors (selecting rows) are noticed at the next
    update, which moves them to a new buffer; cropping leaves a shorter view of the same
    buffer, which goes on filling in place.
    """

    def __init__(self, room: int):
        super().__init__()
        self.room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if not self._fits(key_states, end):
            self._buffers = (
                _buffer_with_room(self.keys, key_states, length, end + self.room),
                _buffer_with_room(self.values, value_states, length, end + self.room),
            )
        keys, values = self._buffers
        keys[:, :, length:end] = key_states
        values[:, :, length:end] = value_states
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each row `repeats` times, straight into a buffer with room."""
        length = self.get_seq_length()
        if length == 0:
            return
        batch, heads, _, width = self.keys.shape
        repeated = []
        for cached in (self.keys, self.values):
            buffer = cached.new_empty((batch * repeats, heads, length + self.room, width))
            grouped = buffer.view(batch, repeats, heads, length + self.room, width)
            grouped[:, :, :, :length] = cached[:, None]
            repeated.append(buffer)
        self._buffers = (repeated[0], repeated[1])
        self.keys, self.values = repeated[0][:, :, :length], repeated[1][:, :, :length]

    def _fits(self, key_states: torch.Tensor, end: int) -> bool:
        """Whether the buffers hold the current keys/values and have room up to `end`."""
        if self._buffers is None:
            return False
        keys = self._buffers[0]
        return (
            end <= keys.shape[2]
            and keys.shape[0] == key_states.shape[0]
            and self.keys.data_ptr() == keys.data_ptr()
            and self.values.data_ptr() == self._buffers[1].data_ptr()
        )


def _buffer_with_room(
    cached: torch.Tensor, new: torch.Tensor, length: int, capacity: int
) -> torch.Tensor:
    """A (B, heads, capacity, D) buffer holding the first `length` cached positions."""
    batch, heads, _, width = new.shape
    buffer = new.new_empty((batch, heads, capacity, width))
    if length:
        buffer[:, :, :length] = cached
    return buffer


class ReservedCache(DynamicCache):
    """A dynamic cache of `ReservedLayer`s with room for `room` new tokens."""

    def __init__(self, room: int):
        super().__init__()
        self.layer_class_to_replicate = lambda: ReservedLayer(room)


def generate_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    cache: DynamicCache | None = None,
    **settings,
) -> torch.Tensor:
    """`model.generate` on packed weights with a reserved cache (a `ReservedCache` that
    already holds the prompt's first tokens may be passed as `cache`).

    Returns:
        the prompts followed by the generated tokens. Shape: (B, P + A)
    """
    if cache is None and can_reserve(model, input_ids.device):
        cache = ReservedCache(max_new_tokens)
    extra = {} if cache is None else {"cache": cache}
    with packed_linears(model, input_ids.shape[0]):
        return model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            **extra,
            **settings,
        )


def can_reserve(model: nn.Module, device: torch.device) -> bool:
    """Whether generation on `model` uses a `ReservedCache`: on CPU, for decoders whose
    every layer attends to the whole sequence, unless the model's generation config asks
    for a cache of its own (static, offloaded, quantized...)."""
    if device.type != "cpu":
        return False
    generation = getattr(model, "generation_config", None)
    if getattr(generation, "cache_implementation", None) is not None:
        return False
    config = getattr(model, "config", None)
    if config is None:
        return False
    text = config.get_text_config(decoder=True)
    layer_types = getattr(text, "layer_types", None)
    if layer_types is None:
        return getattr(text, "sliding_window", None) is None
    return all(kind == "full_attention" for kind in layer_types)
