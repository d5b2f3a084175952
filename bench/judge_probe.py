"""Which judges can the demo's reward model learn? Relabel the demo's pairs by other graders.

The demo's reward model is a linear head fitted on the untrained model's features (the mean
of the answer's final hidden states). This script keeps those features (cached by
`bench/layer_probe.py`) and the demo's split, and changes only the labels: each grader given
grades both answers of every pair, the labels are drawn with Bradley-Terry noise whose
temperature makes them agree with the grader on `--agree` of the pairs (as
`scripts/make_demo_data.py` does), and the head is fitted on the training pairs' labels and
scored on the held-out pairs' labels, beside the better length rule on the same labels.

    RLHFKIT_HOME=... .venv/bin/python bench/judge_probe.py examples/graders/*.yaml

`--agree 1` gives noiseless labels (the grader's own choices). Ties under a grader count as
half for every predictor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layer_probe import demo_config, features

from rlhfkit.algorithms.reward import fit_linear_head
from rlhfkit.eval.synth import noisy_labels
from rlhfkit.graders import load_grader
from rlhfkit.stats import wilson_interval
from rlhfkit.train.common import split_held_out
from rlhfkit.train.pair_data import prepare_pair_data
from rlhfkit.train.reward_summary import length_rule

FINAL_LAYER_MEAN = (-1, 0)  # (layer, pooling) that the demo's reward model reads


def temperature_for(gaps: torch.Tensor, agree: float) -> float:
    """The noise temperature whose expected agreement with the grader is `agree`."""
    if agree >= 1:
        return 0.0
    low, high = 1e-6, 10.0
    for _ in range(60):  # expected agreement falls as the temperature rises
        middle = (low + high) / 2
        low, high = (
            (middle, high) if torch.sigmoid(gaps.abs() / middle).mean() > agree else (low, middle)
        )
    return low


def draw_labels(grades: list[list[float]], tau: float, seed: int = 0) -> torch.Tensor:
    """+1 where candidate_0 is chosen, -1 where candidate_1 is, 0 for a noiseless tie; with
    noise, drawn as the demo's labels are (`noisy_labels`)."""
    if tau == 0:
        return torch.tensor([float((a > b) - (a < b)) for a, b in grades])
    rows = [{"grades": pair, "choice": 0} for pair in grades]
    return torch.tensor([1.0 - 2 * row["choice"] for row in noisy_labels(rows, tau, seed)])


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Share right, a tie in either counting half."""
    right = (predicted == labels).float()
    right[(predicted == 0) | (labels == 0)] = 0.5
    return right.mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graders", nargs="+", type=Path)
    parser.add_argument("--agree", type=float, default=0.84)
    args = parser.parse_args()
    config = demo_config()
    data = prepare_pair_data(config, True, config.use_margin)
    lines = Path(config.preference_dataset).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line]
    kept, held = split_held_out(len(rows), config.eval_fraction, config.seed)
    cached = features(config, data)
    layer, pooling = FINAL_LAYER_MEAN
    # features in candidate order: the cache holds (chosen, rejected)
    flip = torch.tensor([row["choice"] == 1 for row in rows])

    def candidate_gap(split: str, indices: list[int]) -> torch.Tensor:
        f = cached[split][:, :, layer, pooling].float()  # (N, 2, H)
        f[flip[indices]] = f[flip[indices]].flip(1)
        return f[:, 0] - f[:, 1]

    train_gap, held_gap = candidate_gap("train", kept), candidate_gap("eval", held)
    chars = torch.tensor([[len(row["candidate_0"]), len(row["candidate_1"])] for row in rows])
    longer = torch.sign(chars[:, 0] - chars[:, 1]).float()
    print(
        f"{len(kept)} training pairs, {len(held)} held-out pairs; labels agree with each "
        f"grader on {args.agree:g}"
    )
    print("| grader | noise tau | head, held-out accuracy (95% interval) | better length rule |")
    print("|---|---|---|---|")
    for path in args.graders:
        with load_grader(path) as grader:
            items = [row for row in rows for _ in range(2)]
            answers = [row[f"candidate_{side}"] for row in rows for side in range(2)]
            results = grader.grade_batch(answers, items)
        grades = [[results[2 * i].reward, results[2 * i + 1].reward] for i in range(len(rows))]
        gaps = torch.tensor([a - b for a, b in grades])
        tau = temperature_for(gaps[gaps != 0], args.agree)
        labels = draw_labels(grades, tau)
        train_labels, held_labels = labels[kept], labels[held]
        usable = train_labels != 0
        fit = fit_linear_head(train_gap[usable] * train_labels[usable, None])
        predicted = torch.sign(held_gap @ fit.weight.view(-1))
        right = accuracy(predicted, held_labels)
        low, high = wilson_interval(right * len(held), len(held))
        rule, rule_accuracy = length_rule(accuracy(longer[held], held_labels))
        print(
            f"| {path.stem} | {tau:.3f} | {right:.3f} ({low:.3f}-{high:.3f}) | "
            f"{rule} {rule_accuracy:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
