"""Reward-model learning against wall time: the demo's recipe and TRL's RewardTrainer.

Both sides get the demo's preference pairs split as `rlhfkit run --config
examples/demo/pipeline.yaml seed=N` splits them (eval_fraction 0.3: 501 training pairs, 215
held out), the same prompt text (the demo's instruction, a blank line, the document, in the
model's chat template) and the same bundled SmolLM2-135M-Instruct, on the same machine:

- `--side rlhfkit`: `train-reward` with the demo's reward-model settings, read from
  examples/demo/pipeline.yaml (any setting you add there is measured too);
- `--side trl --minutes M`: TRL's RewardTrainer as its documentation runs it (the model
  with a one-output classification head, every weight trained, TRL's default optimiser
  settings; bf16 only where the CPU computes it natively, as rlhfkit decides), stopped
  after M minutes of training (or after `--epochs`, whichever is first); then its rewards
  for the held-out pairs are computed here, pair by pair, without gradients.

Each run appends one row to bench/results/learning_vs_trl.jsonl: held-out accuracy (a tie
counts half) with its 95% Wilson interval, the better length rule on the same pairs,
accuracy where the chosen answer is longer and where it is shorter, training seconds,
held-out scoring seconds, pairs seen. Run from the repository root, alone on the machine:

    bash bench/setup.sh                                         # bench/.venv with TRL
    RLHFKIT_HOME=... bench/.venv/bin/python bench/learning_vs_trl.py --side rlhfkit --seed 0
    RLHFKIT_HOME=... bench/.venv/bin/python bench/learning_vs_trl.py --side trl --seed 0 --minutes 8
    bench/.venv/bin/python bench/learning_vs_trl.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEMO = ROOT / "examples" / "demo" / "pipeline.yaml"
RESULTS_FILE = BENCH_DIR / "results" / "learning_vs_trl.jsonl"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "learning_vs_trl"


def demo_reward_config(seed: int):
    """The demo's RewardConfig (as `rlhfkit run` builds it) for `seed`."""
    from rlhfkit.config import load_config
    from rlhfkit.pipeline import PipelineConfig, plan

    config = load_config(PipelineConfig, DEMO, {"seed": seed, "output_dir": str(SCRATCH_DIR)})
    problems: list[str] = []
    reward = plan(config, False, problems).reward
    if problems:
        raise SystemExit("\n".join(problems))
    return config, reward


def split_files(config, reward, seed: int) -> tuple[Path, Path]:
    """The demo's training and held-out pairs for `seed`, as two JSONL files of the rows."""
    from rlhfkit.data.formats import load_preferences
    from rlhfkit.train.common import split_held_out

    source = ROOT / config.preference_dataset
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    if len(load_preferences(str(source)).records) != len(rows):
        raise SystemExit(f"{source}: every row must be a valid pair for the split to match")
    kept, held = split_held_out(len(rows), reward.eval_fraction, seed)
    folder = SCRATCH_DIR / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    train_file, held_file = folder / "train.jsonl", folder / "held_out.jsonl"
    for path, indices in ((train_file, kept), (held_file, held)):
        path.write_text("".join(json.dumps(rows[i]) + "\n" for i in indices), encoding="utf-8")
    return train_file, held_file


def run_rlhfkit(seed: int) -> dict[str, Any]:
    from rlhfkit.train.reward import train_reward_model

    config, reward = demo_reward_config(seed)
    train_file, held_file = split_files(config, reward, seed)
    reward.preference_dataset, reward.eval_dataset = str(train_file), str(held_file)
    reward.output_dir = str(SCRATCH_DIR / f"seed{seed}" / "rlhfkit")
    reward.validate()
    started = time.perf_counter()
    result = train_reward_model(reward)
    seconds = time.perf_counter() - started
    settings = {k: v for k, v in vars(reward).items() if not k.endswith(("dataset", "output_dir"))}
    return {
        "side": "rlhfkit",
        "recipe": "the demo's reward model",
        "settings": settings,
        "seconds_total": round(seconds, 1),
        "train_pairs": result.train_pairs,
        "held_out_pairs": result.eval_pairs,
        "accuracy": result.eval_accuracy,
        "accuracy_ci95": list(result.eval_accuracy_ci95),
        "ties": result.eval_ties,
        "accuracy_chosen_longer": result.eval_accuracy_chosen_longer,
        "accuracy_chosen_shorter": result.eval_accuracy_chosen_shorter,
        "prefer_longer": result.longer_baseline_accuracy,
    }


def conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def trl_rows(path: Path, instruction: str) -> list[dict[str, Any]]:
    """TRL's conversational preference rows, the prompt built as rlhfkit builds it."""
    from rlhfkit.data.formats import load_preferences

    rows = []
    for record in load_preferences(str(path)).records:
        (turn,) = record.messages
        prompt = f"{instruction}\n\n{turn.content}"
        rows.append(
            {
                "chosen": conversation(prompt, record.chosen),
                "rejected": conversation(prompt, record.rejected),
                "longer": (len(record.chosen) > len(record.rejected))
                - (len(record.chosen) < len(record.rejected)),
            }
        )
    return rows


def run_trl(seed: int, minutes: float, epochs: float) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl import RewardConfig, RewardTrainer

    from rlhfkit.models.loading import cpu_has_fast_bf16, ensure_default_model

    config, reward = demo_reward_config(seed)
    train_file, held_file = split_files(config, reward, seed)
    train = trl_rows(train_file, config.instruction)
    held = trl_rows(held_file, config.instruction)
    model_dir = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id

    class TimeLimit(TrainerCallback):
        def __init__(self) -> None:
            self.started = 0.0
            self.steps = 0

        def on_train_begin(self, *_: object, **__: object) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **__: object) -> None:
            self.steps = state.global_step
            if time.perf_counter() - self.started > minutes * 60:
                control.should_training_stop = True

    limit = TimeLimit()
    trl_args = RewardConfig(
        output_dir=str(SCRATCH_DIR / f"seed{seed}" / "trl"),
        num_train_epochs=epochs,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=cpu_has_fast_bf16(),  # TRL's default bf16 is for GPUs; as rlhfkit's dtype=auto
        seed=seed,
    )
    trainer = RewardTrainer(
        model=model,
        args=trl_args,
        train_dataset=Dataset.from_list([{k: r[k] for k in ("chosen", "rejected")} for r in train]),
        processing_class=tokenizer,
        callbacks=[limit],
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    figures = trl_held_out(trainer.model, tokenizer, held)
    score_seconds = time.perf_counter() - started
    batch = trl_args.per_device_train_batch_size * trl_args.gradient_accumulation_steps
    return {
        "side": "trl",
        "recipe": f"TRL RewardTrainer, full fine-tuning, stopped after {minutes:g} min",
        "settings": {
            "learning_rate": trl_args.learning_rate,
            "batch_size": batch,
            "max_length": trl_args.max_length,
            "gradient_checkpointing": trl_args.gradient_checkpointing,
            "bf16": trl_args.bf16,
            "minutes": minutes,
            "epochs": epochs,
        },
        "steps": limit.steps,
        "pairs_seen": limit.steps * batch,
        "seconds_train": round(train_seconds, 1),
        "seconds_held_out": round(score_seconds, 1),
        "seconds_total": round(train_seconds + score_seconds, 1),
        "train_pairs": len(train),
        **figures,
    }


def trl_held_out(model, tokenizer, held: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy of a sequence-classification reward model on the held-out pairs."""
    import torch

    from rlhfkit.stats import wilson_interval

    model.eval()
    rewards = []
    with torch.no_grad():
        for row in held:
            texts = [
                tokenizer.apply_chat_template(row[side], tokenize=False)
                for side in ("chosen", "rejected")
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True)
            rewards.append(model(**batch).logits[:, 0].float().tolist())
    right = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in rewards]
    by_length = list(zip(right, [row["longer"] for row in held], strict=True))

    def share(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    low, high = wilson_interval(sum(right), len(right))
    return {
        "held_out_pairs": len(held),
        "accuracy": share(right),
        "accuracy_ci95": [low, high],
        "ties": sum(1 for c, r in rewards if c == r),
        "accuracy_chosen_longer": share([x for x, o in by_length if o == 1]),
        "accuracy_chosen_shorter": share([x for x, o in by_length if o == -1]),
        "prefer_longer": share([1.0 if o == 1 else 0.5 if o == 0 else 0.0 for _, o in by_length]),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| side | seed | recipe | held-out accuracy (95% interval) | prefer-longer | chosen "
        "longer / shorter | pairs trained on | minutes (training + held-out scoring) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["accuracy_ci95"]
        seen = row.get("pairs_seen", row["train_pairs"])
        lines.append(
            f"| {row['side']} | {row['seed']} | {row['recipe']} | {row['accuracy']:.3f} "
            f"({low:.3f}-{high:.3f}), n={row['held_out_pairs']} | {row['prefer_longer']:.3f} | "
            f"{row['accuracy_chosen_longer']:.3f} / {row['accuracy_chosen_shorter']:.3f} | "
            f"{seen} | {row['seconds_total'] / 60:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=("rlhfkit", "trl"))
    parser.add_argument("--seed", type=int, default=0, help="the split of `run ... seed=N`")
    parser.add_argument("--minutes", type=float, default=10.0, help="TRL's training time")
    parser.add_argument("--epochs", type=float, default=1.0, help="TRL's epochs at most")
    parser.add_argument("--table", action="store_true", help="print the rows so far and stop")
    args = parser.parse_args()
    if args.table or not args.side:
        rows = [json.loads(line) for line in RESULTS_FILE.read_text().splitlines()]
        print(table(rows))
        return
    if args.side == "rlhfkit":
        row = run_rlhfkit(args.seed)
    else:
        row = run_trl(args.seed, args.minutes, args.epochs)
    row.update(
        seed=args.seed,
        machine=f"{platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores",
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS_FILE.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    print(table([row]))


if __name__ == "__main__":
    main()
