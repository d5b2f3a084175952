"""Parameters shared by every stage that reads data (names as in rlhf_pipeline)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rlhfkit.config import DEFAULT_MODEL, check, param
from rlhfkit.data.formats import BAD_ROWS


@dataclass
class DataConfig:
    """How prompts and responses are turned into tokens."""

    large_model_reference: str = param(
        DEFAULT_MODEL,
        "Base model: smollm2-135m-instruct (bundled), tiny-random-llama, a local Hugging Face "
        "folder, a hub id, or llama-2-7b / llama-2-7b-chat / llama-2-13b / llama-2-13b-chat.",
    )
    instruction: str | None = param(
        None, "Text prepended (with a blank line) to the last user turn of every prompt."
    )
    prompt_sequence_length: int = param(
        512, "Maximum prompt length in tokens; longer prompts are cut inside their longest turn."
    )
    target_sequence_length: int = param(
        64, "Maximum response length in tokens (end-of-sequence token included)."
    )
    use_chat_template: bool = param(
        True, "Apply the model's chat template to prompts when the tokenizer has one."
    )
    bad_rows: str = param(
        "error",
        "Invalid data rows: error (stop, listing every problem) or skip (leave them out; "
        "they are counted by reason, printed and listed in the run's dropped_rows.jsonl).",
        choices=BAD_ROWS,
    )

    def validate(self) -> None:
        check(
            self.prompt_sequence_length >= 8,
            "prompt_sequence_length",
            self.prompt_sequence_length,
            "must be at least 8 tokens",
        )
        check(
            self.target_sequence_length >= 1,
            "target_sequence_length",
            self.target_sequence_length,
            "must be at least 1 token",
        )


DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))
"""The parameters that decide which rows are read and how text becomes tokens, shared by
every stage."""


def data_settings(config: DataConfig) -> dict[str, Any]:
    """`config`'s DataConfig parameters, to run another stage with the same encoding."""
    return {name: getattr(config, name) for name in DATA_FIELDS}
