"""What a reward-model run produced (`RewardResult`) and how it is said: the verdict on the
held-out pairs against chance and the length rules, the summary lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.stats import pairs_to_tell_from_chance


@dataclass
class RewardResult:
    """What a finished run produced: the kept model's figures on the held-out pairs.

    `eval_accuracy` counts a tie as half a pair (`eval_ties` says how many there were);
    `eval_accuracy_ci95` is its 95% Wilson interval; `best_step` is the step whose weights
    were kept (the lowest validation rank loss, or the last step without validation).
    """

    run_dir: Path
    reward_model_dir: Path
    eval_accuracy: float
    eval_rank_loss: float
    longer_baseline_accuracy: float
    train_pairs: int
    eval_pairs: int
    eval_accuracy_ci95: list[float]
    eval_ties: int
    eval_accuracy_chosen_longer: float
    eval_accuracy_chosen_shorter: float
    validation_pairs: int
    steps: int
    best_step: int
    stopped_early: bool
    verdict: str
    dropped_rows: list[str] = field(default_factory=list)
    """One line per dataset that lost rows to `bad_rows=skip` (listed in dropped_rows.jsonl)."""


def length_rule(longer_accuracy: float) -> tuple[str, float]:
    """The better of "prefer the longer answer" and "prefer the shorter one" (its accuracy is
    1 - the other's: equal lengths count half either way), named, with its accuracy."""
    if longer_accuracy >= 0.5:
        return "prefer-longer", longer_accuracy
    return "prefer-shorter", 1.0 - longer_accuracy


def verdict(stats: dict, prefix: str = "eval") -> str:
    """One sentence on whether the held-out figure tells the model from chance."""
    n, accuracy = stats[f"{prefix}/n"], stats[f"{prefix}/accuracy"]
    low, high = stats[f"{prefix}/accuracy_ci95_low"], stats[f"{prefix}/accuracy_ci95_high"]
    name, baseline = length_rule(stats[f"{prefix}/longer_baseline_accuracy"])
    if low > 0.5:
        rule = (
            "above" if low > baseline else ("below" if accuracy < baseline else "not clearly above")
        )
        return (
            f"better than chance on {n} held-out pairs (95% interval {low:.3f} to {high:.3f}); "
            f"{rule} the better length rule, {name} ({baseline:.3f})"
        )
    if high < 0.5:
        return f"worse than chance on {n} held-out pairs (95% interval {low:.3f} to {high:.3f})"
    needed = pairs_to_tell_from_chance(accuracy)
    more = (
        f"at an accuracy of {accuracy:.3f}, {needed} held-out pairs would be needed for the "
        "interval to exclude 0.5"
        if needed
        else "an accuracy of exactly 0.5"
    )
    return (
        f"cannot be told from chance on {n} held-out pairs (95% interval {low:.3f} to "
        f"{high:.3f} includes 0.5); {more}"
    )


def result_lines(result: dict[str, Any]) -> list[str]:
    """A finished run's figures as printed (from `RewardResult` fields, e.g. summary.json)."""
    low, high = result["eval_accuracy_ci95"]
    ties = result["eval_ties"]
    lines = [
        f"reward model: held-out accuracy {result['eval_accuracy']:.3f} (95% interval "
        f"{low:.3f} to {high:.3f}{f', {ties} ties counted as half' if ties else ''}) on "
        f"{result['eval_pairs']} pairs; prefer-longer rule "
        f"{result['longer_baseline_accuracy']:.3f}; where the chosen answer is longer "
        f"{figure(result['eval_accuracy_chosen_longer'])}, shorter "
        f"{figure(result['eval_accuracy_chosen_shorter'])}",
        f"  {result['verdict']}",
    ]
    lines += [f"  {line}" for line in result.get("dropped_rows", [])]
    if not result["steps"]:
        lines.append("  the head fitted on the base model's features alone: no training step")
    elif result["validation_pairs"]:
        stop = ", stopped early" if result["stopped_early"] else ""
        lines.append(
            f"  kept step {result['best_step']} of {result['steps']}{stop}: the lowest "
            f"validation rank loss on {result['validation_pairs']} pairs set aside from training"
            + (
                " (step 0: the fitted head, before any training step)"
                if not result["best_step"]
                else ""
            )
        )
    return lines


def figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
