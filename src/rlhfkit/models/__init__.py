"""Model references: the bundled default, local folders, hub ids and a tiny test model."""

from rlhfkit.models.loading import (
    DEFAULT_MODEL,
    MODEL_ALIASES,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    rlhfkit_home,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ALIASES",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "rlhfkit_home",
]
