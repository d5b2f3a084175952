"""Cheaper decode steps: one-query attention, the reserved cache, packed linear layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rlhfkit.models.decoding import (
    ReservedCache,
    ReservedLayer,
    can_pack,
    generate_tokens,
    packed_linears,
)
from rlhfkit.models.lean import _one_query_attention, make_lean
from rlhfkit.models.loading import build_tiny_llama


def _heads(batch=3, heads=6, kv_heads=2, length=11, width=16, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch, heads, 1, width, generator=generator).to(dtype)
    key = torch.randn(batch, kv_heads, length, width, generator=generator).to(dtype)
    value = torch.randn(batch, kv_heads, length, width, generator=generator).to(dtype)
    return query, key, value


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_one_query_attention_equals_the_fused_kernel(mask_kind):
    query, key, value = _heads()
    mask = None
    if mask_kind != "none":
        allowed = torch.ones(3, 1, 1, 11, dtype=torch.bool)
        allowed[0, ..., :4] = False  # left padding of row 0
        allowed[2, ..., :1] = False
        mask = allowed
        if mask_kind == "additive":
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True)
    output, weights = _one_query_attention(query, key, value, mask, None)
    assert weights is None
    assert output.shape == (3, 1, 6, 16)
    torch.testing.assert_close(output, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_one_query_attention_reads_views_of_a_larger_buffer_and_its_scale():
    query, key, value = _heads(dtype=torch.bfloat16)
    buffer = torch.zeros(3, 2, 40, 16, dtype=torch.bfloat16)
    buffer[:, :, :11] = key
    expected = F.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), scale=0.3, enable_gqa=True
    )
    output, _ = _one_query_attention(query, buffer[:, :, :11], value, None, 0.3)
    torch.testing.assert_close(output.float(), expected.transpose(1, 2), atol=2e-2, rtol=2e-2)


def test_reserved_layer_equals_concatenation_and_copies_only_new_tokens():
    generator = torch.Generator().manual_seed(1)
    layer = ReservedLayer(room=5)
    parts = [torch.randn(2, 3, n, 4, generator=generator) for n in (6, 1, 1, 1)]
    for step, part in enumerate(parts):
        keys, values = layer.update(part, part * 2)
        expected = torch.cat(parts[: step + 1], dim=2)
        assert torch.equal(keys, expected) and torch.equal(values, expected * 2)
        if step == 0:
            buffer = keys.data_ptr()
        assert keys.data_ptr() == buffer  # written in place, no new buffer
    assert layer.get_seq_length() == 9
    # rows repeated for several answers per prompt: straight into a buffer with room
    layer.batch_repeat_interleave(2)
    repeated = layer.keys.data_ptr()
    new = torch.randn(4, 3, 1, 4, generator=generator)
    keys, values = layer.update(new, new)
    expected = torch.cat([torch.cat(parts, 2).repeat_interleave(2, 0), new], 2)
    assert torch.equal(keys, expected) and keys.data_ptr() == repeated
    assert torch.equal(values[:, :, :9], torch.cat(parts, 2).repeat_interleave(2, 0) * 2)
    # past the room: a larger buffer, same contents
    for _ in range(8):
        keys, _ = layer.update(new, new)
    assert keys.shape[2] == 18 and torch.equal(keys[:, :, -1:], new)
    # rows selected or cropped from outside: the next update still appends after them
    layer.crop(-3)
    layer.batch_select_indices(torch.tensor([1, 3]))
    keys, _ = layer.update(new[:2], new[:2])
    kept = [expected[[1, 3]], new[[1, 3]].expand(2, 3, 5, 4), new[:2]]  # 10 + 8 - 3 + 1
    assert torch.equal(keys, torch.cat(kept, 2))


@pytest.mark.skipif(not can_pack(torch.device("cpu"), torch.float32), reason="no oneDNN")
@pytest.mark.parametrize("autocast", [False, True])
def test_packed_linears_give_the_layers_results_and_are_undone(autocast):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8, bias=False))
    x = torch.randn(4, 1, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = model(x)
        with packed_linears(model, rows=4):
            assert all("forward" in vars(m) for m in model if isinstance(m, nn.Linear))
            packed = model(x)
    assert packed.dtype == expected.dtype
    tolerance = 2e-2 if autocast else 1e-5
    torch.testing.assert_close(packed, expected, atol=tolerance, rtol=tolerance)
    assert not any("forward" in vars(m) for m in model)


def test_generate_tokens_matches_transformers_generate():
    plain = build_tiny_llama().eval()  # transformers' SDPA attention and dynamic cache
    model = make_lean(build_tiny_llama()).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    settings = {"do_sample": False, "pad_token_id": 2, "min_new_tokens": 12}
    with torch.no_grad():
        expected = plain.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, **settings)
        cache = ReservedCache(room=12)
        ours = generate_tokens(model, ids, mask, 12, cache=cache, **settings)
    assert torch.equal(ours, expected)
    assert all(isinstance(layer, ReservedLayer) for layer in cache.layers)
    assert not any("forward" in vars(m) for m in model.modules() if isinstance(m, nn.Linear))


def test_weights_are_not_packed_when_the_copy_would_crowd_memory(monkeypatch):
    from rlhfkit.models import decoding

    model = nn.Sequential(nn.Linear(16, 32))  # 2 KiB of fp32 weights
    monkeypatch.setattr(decoding, "_available_memory", lambda: 4 * 2048 - 1)
    with packed_linears(model, rows=4):
        assert "forward" not in vars(model[0])
    monkeypatch.setattr(decoding, "_available_memory", lambda: 4 * 2048)
    with packed_linears(model, rows=4):
        assert "forward" in vars(model[0]) or not can_pack(torch.device("cpu"), torch.float32)


def test_packing_keeps_a_forward_set_before_it_and_does_not_pack_twice():
    layer = nn.Linear(8, 8)
    hooked = layer.forward
    layer.forward = hooked  # an instance-level forward, as hooks set
    model = nn.Sequential(layer)
    with packed_linears(model, rows=2):
        outer = vars(layer)["forward"]
        with packed_linears(model, rows=2):
            assert vars(layer)["forward"] is outer
        assert vars(layer)["forward"] is outer
    assert vars(layer)["forward"] is hooked


@pytest.mark.skipif(not can_pack(torch.device("cpu"), torch.bfloat16), reason="no bf16 oneDNN")
def test_packed_lora_policy_under_autocast_gives_the_same_logits():
    from peft import LoraConfig, get_peft_model

    base = make_lean(build_tiny_llama()).to(torch.bfloat16)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config).eval()
    for name, weight in model.named_parameters():
        if "lora_B" in name:  # a trained adapter, not the zero start
            torch.nn.init.normal_(weight, std=0.05)
    ids = torch.randint(3, 1000, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(input_ids=ids).logits.float()
        with packed_linears(model, rows=2):
            packed = model(input_ids=ids).logits.float()
    torch.testing.assert_close(packed, expected, atol=0.05, rtol=0.05)


def test_reserved_cache_only_where_every_layer_sees_the_whole_sequence():
    from rlhfkit.models.decoding import can_reserve

    model = build_tiny_llama()
    cpu = torch.device("cpu")
    assert can_reserve(model, cpu)
    assert not can_reserve(model, torch.device("meta"))
    model.config.layer_types = ["sliding_attention", "full_attention"]
    assert not can_reserve(model, cpu)
    model.config.layer_types = ["full_attention", "full_attention"]
    model.generation_config.cache_implementation = "static"
    assert not can_reserve(model, cpu)
