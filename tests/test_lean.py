"""The lean RMSNorm, SwiGLU and grouped attention: same forward, same gradients, less kept."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.models.lean import LEAN_ATTENTION, make_lean
from rlhfkit.models.loading import build_tiny_llama


def _inputs():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (2, 24), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # left padding, so attention runs with a mask
    return ids, mask


def _run(model, dtype: torch.dtype, autocast: bool):
    """Hidden states, the gradient of every parameter, and the bytes autograd kept."""
    model = model.to(dtype)
    model.requires_grad_(True)
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids, mask = _inputs()
    params = {id(p) for p in model.parameters()}
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
    ):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden.float().square().mean().backward()
    activations = sum(
        n for ptr, n in kept.items() if ptr not in {p.data_ptr() for p in model.parameters()}
    )
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    assert params
    return hidden.detach(), grads, activations


@pytest.mark.parametrize("autocast", [False, True])
def test_lean_model_matches_the_plain_one(autocast):
    plain = build_tiny_llama()
    lean = make_lean(build_tiny_llama())
    assert lean.config._attn_implementation == LEAN_ATTENTION
    assert type(lean.model.layers[0].mlp.act_fn).__name__ == "SiLUActivation"
    hidden_a, grads_a, kept_a = _run(plain, torch.float32, autocast)
    hidden_b, grads_b, kept_b = _run(lean, torch.float32, autocast)
    # the same operations run forward: bit for bit
    assert torch.equal(hidden_a, hidden_b)
    assert grads_a.keys() == grads_b.keys()
    # every gradient, the norm weights included, up to the order of float sums
    tolerance = 2e-2 if autocast else 1e-4
    for name, grad in grads_a.items():
        error = (grads_b[name] - grad).norm() / grad.norm().clamp(min=1e-12)
        assert error < tolerance, (name, float(error))
    # fp32 RMSNorm copies, silu(gate) and repeated keys/values are no longer kept
    assert kept_b < 0.8 * kept_a, (kept_a, kept_b)


def test_lean_model_generates_the_same_tokens():
    plain = build_tiny_llama().eval()
    lean = make_lean(build_tiny_llama()).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        settings = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False}
        expected = plain.generate(ids, pad_token_id=2, **settings)
        assert torch.equal(lean.generate(ids, pad_token_id=2, **settings), expected)


def test_other_attention_and_activations_are_left_alone():
    model = build_tiny_llama()
    model.set_attn_implementation("eager")
    model.model.layers[0].mlp.act_fn = torch.nn.GELU()
    make_lean(model)
    assert model.config._attn_implementation == "eager"
    assert "forward" not in vars(model.model.layers[0].mlp)
    assert "forward" in vars(model.model.layers[1].mlp)
    assert "forward" in vars(model.model.norm)


def test_heap_is_trimmed_after_every_tenth_layer_and_the_last(monkeypatch):
    from rlhfkit.train import memory

    calls: list[int] = []
    layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(23))
    for index, layer in enumerate(layers, start=1):
        layer.register_forward_hook(lambda *_, index=index: calls.append(-index))
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(len(calls)))
    handles = memory.trim_heap_during_forward(layers, every=10)
    if memory._malloc_trim() is None:
        pytest.skip("no glibc malloc_trim on this system")
    assert len(handles) == 3  # after layers 10, 20 and 23 (the last)
    x = torch.randn(2, 4)
    expected = x
    for layer in layers:
        expected = layer(expected)
    calls.clear()
    for layer in layers:
        x = layer(x)
    assert torch.equal(x, expected)
    trims = [i for i, c in enumerate(calls) if c >= 0]
    assert [calls[i - 1] for i in trims] == [-10, -20, -23]
    for handle in handles:
        handle.remove()
