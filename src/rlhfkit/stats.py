"""Statistics of judgments and rankings: win-rate intervals, pair accuracy, agreement with humans.

Plain functions of lists of labels; each is checked against hand-worked numbers in
tests/test_stats.py.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

CHOICES = ("A", "B", "TIE")


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% with the default z).

    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    eq. for p̂ ± z·sqrt(p̂(1-p̂)/n + z²/4n²) / (1 + z²/n). Unlike the normal interval it
    stays inside [0, 1] and is not empty at 0 or n successes. (0, 1) when n is 0.
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def cohens_kappa(
    rater_1: Sequence[str], rater_2: Sequence[str], categories: Sequence[str] = CHOICES
) -> float:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e), of two raters over the same items.

    Cohen (1960), "A coefficient of agreement for nominal scales", eq. 1. p_o is the
    observed agreement, p_e the agreement expected from each rater's label frequencies.
    When p_e is 1 (both raters always gave the same single label) kappa is 1.0 if they
    agree, as is conventional; NaN for no items.
    """
    if len(rater_1) != len(rater_2):
        raise ValueError(f"raters judged {len(rater_1)} and {len(rater_2)} items")
    n = len(rater_1)
    if n == 0:
        return math.nan
    observed = sum(x == y for x, y in zip(rater_1, rater_2, strict=True)) / n
    counts_1, counts_2 = Counter(rater_1), Counter(rater_2)
    expected = sum(counts_1[c] * counts_2[c] for c in categories) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def alignment_metrics(
    predicted: Sequence[str], truth: Sequence[str], positive: str = "B"
) -> dict[str, float | int | dict]:
    """How well an autorater's choices (`predicted`) match human ones (`truth`).

    `accuracy` is the share of equal labels over all three choices. `precision`, `recall`
    and `f1_score` treat `positive` (model B preferred) as the positive class. Also the
    confusion matrix, `confusion[human][autorater]`. A ratio with a zero denominator is 0.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} human labels")
    n = len(truth)
    hits = sum(p == t for p, t in zip(predicted, truth, strict=True))
    true_pos = sum(p == positive and t == positive for p, t in zip(predicted, truth, strict=True))
    predicted_pos = sum(p == positive for p in predicted)
    actual_pos = sum(t == positive for t in truth)
    precision = true_pos / predicted_pos if predicted_pos else 0.0
    recall = true_pos / actual_pos if actual_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    confusion = {t: {p: 0 for p in CHOICES} for t in CHOICES}
    for p, t in zip(predicted, truth, strict=True):
        confusion[t][p] += 1
    return {
        "n": n,
        "accuracy": hits / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1_score": f1,
        "cohens_kappa": cohens_kappa(predicted, truth),
        "confusion": confusion,
    }


def win_rates(choices: Sequence[str]) -> dict[str, float | int | list[float]]:
    """Win and tie rates of a list of A/B/TIE choices, each win rate with its 95% interval."""
    n = len(choices)
    counts = Counter(choices)
    rates: dict[str, float | int | list[float]] = {"n": n}
    for side, key in (("A", "model_a"), ("B", "model_b")):
        rates[f"{key}_wins"] = counts[side]
        rates[f"{key}_win_rate"] = counts[side] / n if n else 0.0
        rates[f"{key}_win_rate_ci95"] = list(wilson_interval(counts[side], n))
    rates["ties"] = counts["TIE"]
    rates["tie_rate"] = counts["TIE"] / n if n else 0.0
    return rates


def pair_accuracy(diffs: Sequence[float], length_order: Sequence[int]) -> dict[str, float | int]:
    """How often a scorer ranks the chosen answer first, overall and split by length.

    One definition everywhere: a pair counts 1 when the chosen answer's score is higher,
    0 when it is lower and 1/2 on a tie (a coin toss); ties are also counted on their own.
    `accuracy_ci95_low/high` is the 95% Wilson interval (see `wilson_interval`).

    Args:
        diffs: score of the chosen minus score of the rejected answer, per pair.
        length_order: per pair, 1 when the chosen answer is longer, -1 when shorter, 0 when
            both have the same length.

    Returns:
        `n`, `accuracy`, `accuracy_ci95_low`, `accuracy_ci95_high`, `ties`,
        `accuracy_chosen_longer` and `accuracy_chosen_shorter` (NaN when no such pair) with
        their counts `n_chosen_longer` and `n_chosen_shorter`, and
        `longer_baseline_accuracy`: the rule "prefer the longer answer" scored the same way.
    """
    if len(diffs) != len(length_order):
        raise ValueError(f"{len(diffs)} score differences for {len(length_order)} pairs")
    credit = [1.0 if d > 0 else 0.0 if d < 0 else 0.5 for d in diffs]
    n = len(credit)
    low, high = wilson_interval(sum(credit), n)
    out: dict[str, float | int] = {
        "n": n,
        "accuracy": sum(credit) / n if n else math.nan,
        "accuracy_ci95_low": low,
        "accuracy_ci95_high": high,
        "ties": sum(d == 0 for d in diffs),
    }
    for name, sign in (("chosen_longer", 1), ("chosen_shorter", -1)):
        part = [c for c, order in zip(credit, length_order, strict=True) if order == sign]
        out[f"accuracy_{name}"] = sum(part) / len(part) if part else math.nan
        out[f"n_{name}"] = len(part)
    rule = [1.0 if order > 0 else 0.0 if order < 0 else 0.5 for order in length_order]
    out["longer_baseline_accuracy"] = sum(rule) / n if n else math.nan
    return out


def length_order(chosen: str, rejected: str) -> int:
    """1 when the chosen answer is longer (in characters), -1 when shorter, 0 when equal."""
    return (len(chosen) > len(rejected)) - (len(chosen) < len(rejected))


def pairs_to_tell_from_chance(accuracy: float, z: float = 1.959964) -> int | None:
    """The fewest pairs at which an accuracy of `accuracy` has a 95% Wilson interval that
    excludes 0.5. The Wilson interval inverts the score test, whose variance at 0.5 is 1/4,
    so it excludes 0.5 exactly when n > z^2 / (4 (p - 0.5)^2). None at an accuracy of 0.5."""
    gap = abs(accuracy - 0.5)
    if not gap > 0:
        return None
    return math.floor(z * z / (4 * gap * gap)) + 1
