"""Preference pairs for a training run: loaded, held out, set aside for validation and
encoded (the reward model's and DPO's data)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rlhfkit import seeding
from rlhfkit.data.formats import Dataset
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.errors import RlhfkitError
from rlhfkit.train.common import split_held_out
from rlhfkit.train.pairs import EncodedPair, encode_pairs

logger = logging.getLogger(__name__)

EVAL_ROWS_MAX = 5000
"""Most rows of an eval_dataset used for evaluation."""


@dataclass
class PreparedData:
    """Encoded training, validation and held-out pairs."""

    train: list[EncodedPair]
    validation: list[EncodedPair]
    eval: list[EncodedPair]
    pad_id: int
    sources: dict[str, Dataset]
    """The datasets read, by path (their `dropped` rows are reported)."""


def prepare_pair_data(config: Any, trains: bool, use_margin: bool) -> PreparedData:
    """Load the preference data, hold out the eval pairs, set validation pairs aside from
    the training pairs (when the run `trains`: with no training step there is no step to
    choose, and every pair trains), and encode everything (`margin` read when
    `use_margin`).

    `config`: a training config with the preference data's fields (`preference_dataset`,
    `eval_dataset`, `eval_fraction`, `validation_fraction`, `bad_rows`, `seed`) and the
    data encoding's (`rlhfkit.data.config.DataConfig`)."""
    from rlhfkit.data.formats import load_dataset, load_preferences
    from rlhfkit.models.loading import load_tokenizer

    train_set = load_preferences(config.preference_dataset, config.bad_rows)
    sources = {config.preference_dataset: train_set}
    train_records = train_set.records
    if config.eval_dataset:
        held_out = load_dataset(config.eval_dataset, "preference", config.bad_rows)
        sources[config.eval_dataset] = held_out
        eval_records = held_out.records[:EVAL_ROWS_MAX]
    else:
        train_records, eval_records = _split(
            train_records, config.eval_fraction, config.seed, "evaluation", "set eval_dataset"
        )
    validation_records: list = []
    if config.validation_fraction and trains:
        train_records, validation_records = _split(
            train_records,
            config.validation_fraction,
            seeding.validation_split(config.seed),
            "validation",
            "set validation_fraction=0",
        )
    if not train_records:
        raise RlhfkitError(
            f"{config.preference_dataset}: no training pair is left after holding out "
            "evaluation and validation pairs; add rows, set eval_dataset, or lower "
            "eval_fraction / validation_fraction"
        )
    for warning in train_set.warnings:
        logger.warning(warning)
    tokenizer = load_tokenizer(config.large_model_reference)
    encoder = PromptEncoder.from_settings(tokenizer, config)
    train = encode_pairs(train_records, encoder, use_margin)
    logger.info(
        "training pairs: %s",
        encoder.counts.summary(config.prompt_sequence_length, config.target_sequence_length),
    )
    held_out = PromptEncoder.from_settings(tokenizer, config)
    return PreparedData(
        train,
        encode_pairs(validation_records, held_out, use_margin),
        encode_pairs(eval_records, held_out, use_margin),
        tokenizer.pad_token_id,
        sources,
    )


def _split(
    records: list, fraction: float, seed: int, purpose: str, instead: str
) -> tuple[list, list]:
    """(kept, set aside for `purpose`): a seeded random `fraction` of the records (at least
    one); `instead` says how to do without the split."""
    if len(records) < 2:
        raise RlhfkitError(
            f"{len(records)} training preference pair(s): at least 2 are needed to set one "
            f"aside for {purpose}; add rows, or {instead}"
        )
    kept, aside = split_held_out(len(records), fraction, seed)
    return [records[i] for i in kept], [records[i] for i in aside]
