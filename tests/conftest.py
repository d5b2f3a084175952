import json
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


def train_tiny_reward_model(folder, **settings):
    """A reward model on the tiny model (a few steps: the tests need one, not a good one);
    `settings` change the RewardConfig (e.g. head_pooling)."""
    from rlhfkit.train.reward import RewardConfig, train_reward_model

    rows = [
        {
            "input_text": f"What is {topic}?",
            "candidate_0": f"{topic} is nice.",
            "candidate_1": f"I do not know {topic}.",
            "choice": 0,
        }
        for topic in ("rain", "tea", "owls", "maps", "salt", "glass", "bees", "snow")
    ]
    data = folder / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RewardConfig(
        preference_dataset=str(data),
        large_model_reference="tiny-random-llama",
        reward_model_train_steps=2,
        batch_size=4,
        dtype="fp32",
        head_init_std=0.5,
        output_dir=str(folder / "run"),
        **settings,
    )
    return train_reward_model(config).reward_model_dir


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory):
    """A reward model on the tiny model (its head reads the mean of the answer, the default)."""
    return train_tiny_reward_model(tmp_path_factory.mktemp("rm"))
