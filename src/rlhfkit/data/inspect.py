"""`rlhfkit data inspect`: what a user looks at before training on a dataset."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.data.config import DataConfig
from rlhfkit.data.formats import Dataset
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import PreferenceRecord

EXAMPLES_SHOWN = 3
REWARD_BATCH_SIZE = 16
"""The batch size `steps_per_epoch` is counted at unless `--batch-size` says otherwise
(train-reward's default)."""
CANDIDATE_FORMATS = ("rlhf_text", "rlhf_chat")
"""Preference formats with a candidate order (`choice`), whose balance is worth a line."""
BAD_ROWS_SHOWN = 5
"""Problems of invalid rows shown by `data inspect` (all are counted)."""


@dataclass
class LengthStats:
    """min, median, p95 and max of a list of lengths."""

    min: int
    median: float
    p95: int
    max: int
    mean: float

    @classmethod
    def of(cls, values: list[int]) -> LengthStats:
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(
            min=ordered[0],
            median=float(statistics.median(ordered)),
            p95=p95,
            max=ordered[-1],
            mean=round(statistics.fmean(ordered), 1),
        )


def _preference_figures(
    dataset: Dataset,
    encoder: PromptEncoder,
    fields: dict[str, list[str]],
    tokens: dict[str, list[int]],
    batch_size: int,
) -> dict[str, Any]:
    """A preference dataset's own figures; adds the answers' texts and token counts to
    `fields` and `tokens`."""
    records = dataset.records
    report: dict[str, Any] = {}
    fields["chosen"] = [r.chosen for r in records]
    fields["rejected"] = [r.rejected for r in records]
    for name in ("chosen", "rejected"):
        tokens[name] = [
            encoder.encode_response(text, add_eos=True).full_length for text in fields[name]
        ]
    if dataset.format in CANDIDATE_FORMATS:  # other formats have no candidate order
        choices = Counter(r.choice for r in records)
        report["choice_balance"] = {"0": choices.get(0, 0), "1": choices.get(1, 0)}
    longer = sum(len(r.chosen) > len(r.rejected) for r in records)
    report["chosen_longer_fraction"] = round(longer / len(records), 4)
    report["with_margin"] = sum(r.margin is not None for r in records)
    report["steps_per_epoch"] = {
        "batch_size": batch_size,
        "steps": math.ceil(len(records) / batch_size),
    }
    return report


def inspect_dataset(
    dataset: Dataset, tokenizer: Any, config: DataConfig, batch_size: int = REWARD_BATCH_SIZE
) -> dict[str, Any]:
    """Statistics of a loaded dataset as one JSON-ready dict (`batch_size`: what a
    preference dataset's steps per epoch are counted at)."""
    encoder = PromptEncoder(
        tokenizer,
        instruction=config.instruction,
        prompt_sequence_length=config.prompt_sequence_length,
        target_sequence_length=config.target_sequence_length,
        use_chat_template=config.use_chat_template,
    )
    records = dataset.records
    fields: dict[str, list[str]] = {"prompt": [r.text for r in records]}
    tokens: dict[str, list[int]] = {
        "prompt": [encoder.encode_prompt(r.messages).full_length for r in records]
    }
    report: dict[str, Any] = {
        "path": ", ".join(dataset.files),
        "kind": dataset.kind,
        "format": dataset.format,
        "rows": len(records),
        "files": dataset.files,
    }
    if dataset.kind == "preference":
        report.update(_preference_figures(dataset, encoder, fields, tokens, batch_size))
    report["length_chars"] = {
        k: vars(LengthStats.of([len(t) for t in v])) for k, v in fields.items()
    }
    report["length_tokens"] = {k: vars(LengthStats.of(v)) for k, v in tokens.items()}
    report["truncated"] = {
        "prompt_sequence_length": config.prompt_sequence_length,
        "target_sequence_length": config.target_sequence_length,
        "prompts": sum(n > config.prompt_sequence_length for n in tokens["prompt"]),
        "responses": sum(
            n > config.target_sequence_length
            for name in ("chosen", "rejected")
            for n in tokens.get(name, [])
        ),
        "rows": sum(_row_truncated(i, tokens, config) for i in range(len(records))),
    }
    report["duplicates"] = _duplicates(records)
    report["bad_rows"] = {
        "rows": dataset.dropped_rows,
        "by_reason": dataset.dropped_reasons(),
        "first": [problem for _, problem in dataset.dropped[:BAD_ROWS_SHOWN]],
    }
    report["warnings"] = list(dataset.warnings)
    report["examples"] = [_example(r) for r in records[:EXAMPLES_SHOWN]]
    report["tokenizer"] = config.large_model_reference
    report["chat_template"] = encoder.templated
    report["_token_lengths"] = tokens
    return report


def _row_truncated(i: int, tokens: dict[str, list[int]], config: DataConfig) -> bool:
    if tokens["prompt"][i] > config.prompt_sequence_length:
        return True
    return any(
        tokens[n][i] > config.target_sequence_length for n in ("chosen", "rejected") if n in tokens
    )


def _duplicates(records: list) -> dict[str, int]:
    """Repeated prompts and pairs; for preference data also `conflicts`: pairs (the same
    prompt and the same two answers) that some row prefers one way and another the other."""
    prompts = Counter(r.messages for r in records)
    out = {"prompts": sum(c - 1 for c in prompts.values() if c > 1)}
    if records and isinstance(records[0], PreferenceRecord):
        pairs = Counter((r.messages, frozenset((r.chosen, r.rejected))) for r in records)
        out["pairs"] = sum(c - 1 for c in pairs.values() if c > 1)
        chosen: dict[Any, set[str]] = {}
        for r in records:
            chosen.setdefault((r.messages, frozenset((r.chosen, r.rejected))), set()).add(r.chosen)
        out["conflicts"] = sum(len(answers) > 1 for answers in chosen.values())
    return out


def _example(record: Any) -> dict[str, Any]:
    example = {
        "source": str(record.source),
        "prompt": [{"role": m.role, "content": m.content} for m in record.messages],
    }
    if isinstance(record, PreferenceRecord):
        example.update(chosen=record.chosen, rejected=record.rejected, choice=record.choice)
    if record.extra:
        example["extra"] = record.extra
    return example


def write_plots(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """One PNG histogram of token lengths per field; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhfkit.fileio import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    limits = report["truncated"]
    for name, lengths in report["_token_lengths"].items():
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.hist(lengths, bins=min(40, max(5, len(set(lengths)))), color="#4C72B0")
        limit = limits["prompt_sequence_length" if name == "prompt" else "target_sequence_length"]
        ax.axvline(limit, color="#C44E52", linestyle="--", label=f"limit {limit}")
        ax.set_title(f"{name} length ({report['rows']} rows)")
        ax.set_xlabel("tokens")
        ax.set_ylabel("rows")
        ax.legend()
        fig.tight_layout()
        path = folder / f"{name}_tokens.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    if "chosen" in report["_token_lengths"]:
        written.append(_overlaid_lengths(report, folder, plt))
    return written


def _overlaid_lengths(report: dict[str, Any], folder: Path, plt) -> Path:
    """Chosen and rejected answer lengths on one axis, same bins: a length bias shows as
    one histogram shifted from the other."""
    from rlhfkit.fileio import atomic_path

    chosen, rejected = report["_token_lengths"]["chosen"], report["_token_lengths"]["rejected"]
    low, high = min(chosen + rejected), max(chosen + rejected)
    bins = min(40, max(5, high - low + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, lengths, color in (("chosen", chosen, "#55A868"), ("rejected", rejected, "#C44E52")):
        median = statistics.median(lengths)
        label = f"{name} (median {median:g})"
        ax.hist(lengths, bins=bins, range=(low, high + 1), alpha=0.55, color=color, label=label)
    share = report["chosen_longer_fraction"]
    ax.set_title(f"answer length: chosen longer in {share:.0%} of {report['rows']} pairs")
    ax.set_xlabel("tokens")
    ax.set_ylabel("answers")
    ax.legend()
    fig.tight_layout()
    path = folder / "chosen_vs_rejected_tokens.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
