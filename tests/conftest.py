import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled model's tokenizer (converts the bundled model into the cache once)."""
    from rlhfkit.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    from rlhfkit.models import load_model

    return load_model("tiny-random-llama", dtype="fp32", device="cpu")
