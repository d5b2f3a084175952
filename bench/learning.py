"""Reward-model recipes compared by what they learn: held-out accuracy, its interval, time.

Each recipe trains a reward model with `rlhfkit train-reward` settings on the same pairs and
is scored on the same held-out pairs (no document in both). A row records the held-out
accuracy with its 95% Wilson interval, the baselines (chance, the prefer-longer rule, and
the ceiling set by the label noise: how often the noisy labels agree with the grader that
made them), accuracy where the chosen answer is longer and where it is shorter, the kept
step, and the wall time.

The data, `bench/data/summary_pairs.jsonl`, is 668 summary pairs of invented news documents
(`scripts/make_documents.py --n 1000 --seed 0`, documents 1-720; `rlhfkit data synth`, both
answers sampled from the bundled model at temperature 0.8, target_sequence_length=64, graded
by `examples/graders/summary.yaml`; 52 tied pairs left out). Labels get Bradley-Terry noise
here, P(first chosen) = sigmoid((grade_0 - grade_1) / tau), seeded, so that close pairs are
near coin flips, as human labels are.

Run from the repository root, on an otherwise idle machine, one recipe after another:

    .venv/bin/python bench/learning.py --recipes last,mean_fit
    .venv/bin/python bench/learning.py --table        # the results so far, as a table

Each finished recipe appends one row to bench/results/learning.jsonl; a recipe already there
(same name, seed and data) is skipped, so a killed sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DATA_FILE = BENCH_DIR / "data" / "summary_pairs.jsonl"
RESULTS_FILE = BENCH_DIR / "results" / "learning.jsonl"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "learning"

INSTRUCTION = "Summarize in less than 50 words."
HELD_OUT = 167
"""Pairs held out (the last documents): a 95% interval of about +-0.075 at 0.6."""
TAU = 0.15
"""Label-noise temperature in grade units: about 3 in 4 labels agree with the grader."""

COMMON = {
    "instruction": INSTRUCTION,
    "prompt_sequence_length": 512,
    "target_sequence_length": 80,
    "batch_size": 16,
    "num_epochs": 1.0,
    "validation_fraction": 0.1,
    "eval_every": 10,
    "log_every": 5,
    "save_every": 1000,
    "head_pooling": "last",
    "head_warm_start": False,
}
"""Settings every recipe shares unless it overrides them. The head is pinned to the last
token without a fit, so that a recipe's name means the same settings whatever rlhfkit's
defaults are; `mean_fit` is today's default recipe."""

RECIPES: dict[str, dict[str, Any]] = {
    "last": {},
    "lr_x4": {"reward_model_learning_rate_multiplier": 4.0},
    "lr_x10": {"reward_model_learning_rate_multiplier": 10.0},
    "lr_x10_r16": {
        "reward_model_learning_rate_multiplier": 10.0,
        "lora_rank": 16,
        "lora_alpha": 32.0,
    },
    "full_ft": {"full_finetune": True, "reward_model_learning_rate_multiplier": 0.04},
    "full_ft_x3": {"full_finetune": True, "reward_model_learning_rate_multiplier": 0.12},
    "lr_x10_head": {"reward_model_learning_rate_multiplier": 10.0, "head_init_std": 0.02},
    "lr_x10_center": {
        "reward_model_learning_rate_multiplier": 10.0,
        "center_rewards_coeff": 0.01,
    },
    "lr_x10_2ep": {"reward_model_learning_rate_multiplier": 10.0, "num_epochs": 2.0},
    "lr_x10_constant": {
        "reward_model_learning_rate_multiplier": 10.0,
        "lr_schedule": "constant",
    },
    "mean_x10": {"reward_model_learning_rate_multiplier": 10.0, "head_pooling": "mean"},
    "mean_fit": {"head_pooling": "mean", "head_warm_start": True},
    "mean_fit_x4": {
        "head_pooling": "mean",
        "head_warm_start": True,
        "reward_model_learning_rate_multiplier": 4.0,
    },
    "last_fit": {"head_warm_start": True},
    "mean": {"head_pooling": "mean"},
}
"""The sweep: RewardConfig settings over COMMON, by name."""


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepare(tau: float, noise_seed: int) -> tuple[Path, Path, dict]:
    """Write the training and held-out files; return them and the data's baselines."""
    from rlhfkit.eval.synth import noisy_labels
    from rlhfkit.stats import wilson_interval

    rows = noisy_labels(read_jsonl(DATA_FILE), tau, noise_seed)
    train, held_out = rows[:-HELD_OUT], rows[-HELD_OUT:]
    assert not {r["id"] for r in train} & {r["id"] for r in held_out}
    scratch = SCRATCH_DIR / f"tau{tau:g}-noise{noise_seed}"
    train_file, held_out_file = scratch / "train.jsonl", scratch / "held_out.jsonl"
    write_jsonl(train_file, train)
    write_jsonl(held_out_file, held_out)
    agree = sum(r["choice"] == r["grader_choice"] for r in held_out)
    data = {
        "file": str(DATA_FILE.relative_to(BENCH_DIR.parent)),
        "tau": tau,
        "noise_seed": noise_seed,
        "train_and_validation_pairs": len(train),
        "held_out_pairs": len(held_out),
        "held_out_grader_agreement": agree / len(held_out),
        "held_out_grader_agreement_ci95": list(wilson_interval(agree, len(held_out))),
    }
    return train_file, held_out_file, data


def run_recipe(name: str, seed: int, train_file: Path, held_out_file: Path) -> dict:
    from rlhfkit.train.reward import RewardConfig, train_reward_model

    settings = {**COMMON, **RECIPES[name], "seed": seed}
    output_dir = SCRATCH_DIR / "runs" / f"{name}-seed{seed}"
    config = RewardConfig(
        preference_dataset=str(train_file),
        eval_dataset=str(held_out_file),
        output_dir=str(output_dir),
        resume=True,
        **settings,
    )
    started = time.perf_counter()
    result = train_reward_model(config)
    seconds = time.perf_counter() - started
    return {
        "recipe": name,
        "settings": settings,
        "seconds": round(seconds, 1),
        "train_pairs": result.train_pairs,
        "validation_pairs": result.validation_pairs,
        "steps": result.steps,
        "best_step": result.best_step,
        "held_out_pairs": result.eval_pairs,
        "accuracy": result.eval_accuracy,
        "accuracy_ci95": result.eval_accuracy_ci95,
        "ties": result.eval_ties,
        "rank_loss": result.eval_rank_loss,
        "prefer_longer": result.longer_baseline_accuracy,
        "accuracy_chosen_longer": result.eval_accuracy_chosen_longer,
        "accuracy_chosen_shorter": result.eval_accuracy_chosen_shorter,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | seed | held-out accuracy (95% interval) | prefer-longer | chosen longer "
        "/ shorter | kept step / steps | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["accuracy_ci95"]
        lines.append(
            f"| {row['recipe']} | {row['seed']} | {row['accuracy']:.3f} ({low:.3f}-{high:.3f})"
            f" | {row['prefer_longer']:.3f} | {row['accuracy_chosen_longer']:.3f} / "
            f"{row['accuracy_chosen_shorter']:.3f} | {row['best_step']} / {row['steps']} | "
            f"{row['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--recipes", default="mean_fit", help="comma-separated: " + ",".join(RECIPES)
    )
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--tau", type=float, default=TAU, help="label-noise temperature")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="print the results so far and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    done = read_jsonl(RESULTS_FILE) if RESULTS_FILE.exists() else []
    if args.table:
        print(table(done))
        return
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        sys.exit(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    train_file, held_out_file, data = prepare(args.tau, args.noise_seed)
    low, high = data["held_out_grader_agreement_ci95"]
    print(
        f"data: {data['train_and_validation_pairs']} pairs to train and validate on, "
        f"{data['held_out_pairs']} held out; the noisy held-out labels agree with the grader "
        f"on {data['held_out_grader_agreement']:.3f} ({low:.3f}-{high:.3f}): the ceiling"
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            key = (name, seed, data["tau"], data["noise_seed"])
            if any(
                (r["recipe"], r["seed"], r["data"]["tau"], r["data"]["noise_seed"]) == key
                for r in done
            ):
                print(f"{name} seed {seed}: done, skipped")
                continue
            row = {
                **run_recipe(name, seed, train_file, held_out_file),
                "seed": seed,
                "data": data,
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{len(os.sched_getaffinity(0))} cores",
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS_FILE.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            done.append(row)
            print(table([row]).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
