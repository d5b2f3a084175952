"""The same forward pass with less kept for the backward pass (Llama-family decoders).

Training memory is mostly the activations autograd keeps between the forward and the
backward pass. Three parts of a Llama block keep more than their gradients need:

- RMSNorm upcasts its input to fp32 and autograd keeps that fp32 copy: twice the bytes of
  the bf16 input, which is all the gradient needs (with the per-token scale).
- The SwiGLU MLP keeps the gate, the up projection and silu(gate); silu(gate) is
  recomputed from the gate in the backward pass instead (an elementwise op).
- Grouped-query attention repeats every key/value head for its query heads before
  attention, and autograd keeps the repeated copies. PyTorch's CPU attention kernel takes
  the grouped keys and values as they are (`enable_gqa`), with or without a mask.

`make_lean(model)` switches these in. The forward results are bit-for-bit the same: the
replacements run the very same operations. Gradients are the same up to the order of
floating-point sums. Other architectures are left as they are.

The same attention also takes a cheaper path for a single new token on a key/value cache
(a decode step, `_one_query_attention`): equal to the fused kernel up to rounding, not bit
for bit.
"""

from __future__ import annotations

from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

LEAN_ATTENTION = "rlhfkit_sdpa"
"""Name under which the grouped-query attention is registered with transformers."""

_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}
_MLPS = {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"}
_SILU = {"SiLU", "SiLUActivation"}


class _RMSNorm(torch.autograd.Function):
    """weight * (x / rms(x)) computed in fp32 as transformers does, keeping x in its dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        hidden = x.to(torch.float32)
        scale = torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, scale)
        return weight * (hidden * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, scale = ctx.saved_tensors
        normed = x.to(torch.float32) * scale  # (..., H)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            leading = tuple(range(grad.dim() - 1))
            grad_weight = (grad * normed.to(x.dtype)).sum(leading).to(weight.dtype)
        grad_normed = (grad * weight).to(x.dtype).to(torch.float32)
        # d/dh of h * (mean(h^2) + eps)^-1/2 applied to grad_normed
        grad_x = scale * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_weight, None


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up, keeping gate and up only."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        if ctx.needs_input_grad[1]:
            grad_up = grad * F.silu(gate)
        return grad_gate, grad_up


def _norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(_SwiGLU.apply(self.gate_proj(x), self.up_proj(x)))


def _grouped_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, with grouped keys/values passed unrepeated on CPU,
    and a single new token's attention as two matrix products (`_one_query_attention`)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    special = (
        query.device.type != "cpu"
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or kwargs.get("output_attentions", False)
    )
    q_length = query.shape[2]
    if not special and q_length == 1 and kwargs.get("dropout", 0.0) == 0.0:
        return _one_query_attention(query, key, value, attention_mask, kwargs.get("scaling"))
    if special or groups == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    is_causal = kwargs.get("is_causal")
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = q_length > 1 and attention_mask is None and is_causal
    if is_causal and key.shape[2] > q_length:
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"),
        is_causal=is_causal,
        enable_gqa=True,
    )  # (B, heads, T, head_dim)
    return output.transpose(1, 2).contiguous(), None


def _one_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None,
) -> tuple[torch.Tensor, None]:
    """Attention of one new token per row over its cache (a decode step).

    The fused CPU kernel is built for many query rows: with one it costs ~1.3 ms per layer
    at 8 rows and ~400 cached tokens, against ~0.4 ms for this whole function. The query
    heads sharing a key/value head are stacked as rows of one product, so grouped keys and
    values are read once and never repeated. The products run in the inputs' dtype (bf16
    products round the scores, as transformers' eager attention does); scaling, mask and
    softmax in fp32.

    Args:
        query: (B, heads, 1, D); key, value: (B, kv_heads, L, D), possibly views of a
            larger buffer; mask: boolean (True = attend) or additive, broadcastable to
            (B, 1, 1, L), or None.

    Returns:
        the attention output (B, 1, heads, D) and None (no weights).
    """
    batch, heads, _, width = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, width)  # (B, kv, g, D)
    scale = scale if scale is not None else width**-0.5
    # keys times queries, not queries times transposed keys: on a view of a cache buffer
    # the latter makes a contiguous copy of every key first
    scores = torch.matmul(key, grouped.transpose(-1, -2)).transpose(-1, -2)  # (B, kv, g, L)
    scores = scores.to(torch.float32, memory_format=torch.contiguous_format) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    weights = scores.softmax(-1).to(value.dtype)
    output = torch.matmul(weights, value)  # (B, kv, g, D)
    return output.reshape(batch, 1, heads, width), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(LEAN_ATTENTION, _grouped_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(LEAN_ATTENTION, sdpa_mask)


def make_lean(model: nn.Module) -> nn.Module:
    """Switch a Llama-family model to the lean RMSNorm, MLP and attention, in place.

    Modules of other kinds, MLPs with another activation, and models whose attention is not
    transformers' SDPA are left alone. Returns the model.
    """
    for module in model.modules():
        kind = type(module).__name__
        if kind in _NORMS:
            module.forward = MethodType(_norm_forward, module)
        elif kind in _MLPS and type(module.act_fn).__name__ in _SILU:
            module.forward = MethodType(_mlp_forward, module)
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        _register_attention()
        model.set_attn_implementation(LEAN_ATTENTION)
    return model
