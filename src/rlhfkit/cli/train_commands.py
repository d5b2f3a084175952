"""`rlhfkit train-reward`, `train-rl`, `score` and `rlhfkit grader ...`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rlhfkit.errors import RlhfkitError
from rlhfkit.fileio import check_output_path

if TYPE_CHECKING:
    pass
from rlhfkit.cli.common import (
    add_bad_rows_argument,
    command_group,
    stage_command,
)

# ---------------------------------------------------------------- reward model


def add_reward_commands(commands: argparse._SubParsersAction) -> None:
    stage_command(
        commands,
        "train-reward",
        help="train a Bradley-Terry reward model on a preference dataset",
        description="Train a reward model (LoRA adapter and scalar head, or full "
        "fine-tuning) on preference pairs.",
        handler=_train_reward,
    )

    stage_command(
        commands,
        "train-rl",
        help="tune the policy with RL: PPO, GRPO or RLOO against a reward model or grader",
        description="Tune a LoRA adapter on the base model so that the reward model (or a "
        "grader) scores its answers higher: method=ppo (default; a critic and a KL penalty "
        "to the base model) or method=grpo / rloo (several answers per prompt, "
        "group-relative advantages).",
        handler=_train_rl,
    )

    stage_command(
        commands,
        "train-dpo",
        help="tune the policy on preference pairs directly: DPO, IPO, robust DPO, SimPO",
        description="Tune a LoRA adapter on the base model (or every weight) on preference "
        "pairs with a DPO-family loss (loss_type): no reward model, no sampling. The base "
        "model with the adapter off is the reference; its log-probabilities are computed "
        "once and kept in the run directory.",
        handler=_train_dpo,
    )

    score = commands.add_parser(
        "score",
        help="score responses with a trained reward model",
        description="Write a reward per response. For a preference file both candidates "
        "are scored and the pairwise accuracy is printed.",
    )
    score.add_argument("--reward-model", required=True, metavar="DIR")
    score.add_argument("--data", required=True, metavar="FILE")
    score.add_argument("--out", metavar="FILE.jsonl", help="where to write the rewards")
    score.add_argument(
        "--response-field", default="prediction", help="response column of a prompt file"
    )
    add_bad_rows_argument(score, "--out")
    score.set_defaults(handler=_score)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export-reward",
        help="write a reward model as a transformers sequence-classification folder",
        description="Write a train-reward reward model as a plain Hugging Face folder that "
        "AutoModelForSequenceClassification loads (num_labels=1, LoRA merged, the head as "
        "`score`, tokenizer and chat template), for transformers, TRL and other tools. "
        "rlhfkit reads it back with reward_model=FOLDER and gives the same rewards.",
    )
    export.add_argument("reward_model", metavar="REWARD_DIR", help="train-reward's reward_model/")
    export.add_argument("--out", required=True, metavar="FOLDER", help="the folder to write")
    export.add_argument(
        "--dtype", choices=("fp32", "bf16"), default="fp32", help="weights' dtype (fp32: exact)"
    )
    export.set_defaults(handler=_export_reward)


def _export_reward(args: argparse.Namespace) -> int:
    from rlhfkit.models.sequence_classifier import export_reward_model

    check_output_path(args.out, folder=True)
    result = export_reward_model(args.reward_model, args.out, args.dtype)
    print(
        f"wrote {result.out}: AutoModelForSequenceClassification, {result.layers} layers, "
        f"padding token {result.pad_token}"
    )
    if result.head_bias:
        print(
            f"note: the reward head's bias {result.head_bias:+.6f} has no place in the score "
            "layer (no bias): plain transformers scores rlhfkit's rewards minus it "
            "(differences unchanged); rlhfkit reading the folder adds it back"
        )
    return 0


def _train_reward(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.train.reward import RewardConfig, train_reward_model
    from rlhfkit.train.reward_summary import result_lines

    config = load_config(RewardConfig, args.config, args.overrides)
    result = train_reward_model(config)
    print(
        "\n".join(result_lines(vars(result)))
        + f"\nreward model folder: {result.reward_model_dir}, held-out rank loss "
        f"{result.eval_rank_loss:.4f}\n"
        f"metrics: {result.run_dir / 'metrics.jsonl'} (tensorboard --logdir {result.run_dir})"
    )
    return 0


def _train_rl(args: argparse.Namespace) -> int:
    from rlhfkit.train.methods import load_rl_config, method, train_rl

    config = load_rl_config(args.config, args.overrides)
    result = train_rl(config)
    change = result.eval_reward_after - result.eval_reward_before
    greedy = config.eval_samples == 1
    metric = method(config.method).eval_metric
    lines = [
        f"policy adapter: {result.policy_dir}",
        *([f"merged model: {result.model_dir}"] if result.model_dir else []),
        f"held-out reward ({'greedy answers' if greedy else 'sampled answers'}, "
        f"{result.eval_prompts} prompts): {result.eval_reward_before:.4f} before, "
        f"{result.eval_reward_after:.4f} after ({change:+.4f})",
        *(
            f"best checkpoint: {c['path']} (step {c['step']}, {c[metric]:.4f})"
            for c in result.best_checkpoints or []
        ),
        f"metrics: {result.run_dir / 'metrics.jsonl'} (tensorboard --logdir {result.run_dir})",
        *result.dropped_rows,
    ]
    print("\n".join(lines))
    return 0


def _train_dpo(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.train.dpo import DPOConfig, train_dpo
    from rlhfkit.train.dpo_summary import dpo_lines

    config = load_config(DPOConfig, args.config, args.overrides)
    result = train_dpo(config)
    folders = [
        *([f"policy adapter: {result.policy_dir}"] if result.policy_dir else []),
        *([f"merged model: {result.model_dir}"] if result.model_dir else []),
    ]
    print(
        "\n".join([*dpo_lines(vars(result)), *folders])
        + f"\nmetrics: {result.run_dir / 'metrics.jsonl'} (tensorboard --logdir {result.run_dir})"
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    from rlhfkit.data.formats import dropped_rows_path, record_dropped
    from rlhfkit.eval.score import score_file, write_scores

    if args.out:
        check_output_path(args.out)
    result = score_file(args.reward_model, args.data, args.response_field, args.bad_rows)
    if args.out:
        write_scores(result, args.out)
        print(f"wrote {len(result.rows)} scored rows to {args.out}")
        for line in record_dropped({args.data: result.dataset}, dropped_rows_path(args.out)):
            print(line)
    else:
        for row in result.rows:
            print(json.dumps(row, ensure_ascii=False))
        if result.dataset.dropped:  # no file to list them in: every problem to stderr
            print(result.dataset.dropped_note(args.data), file=sys.stderr)
            for _, problem in result.dataset.dropped:
                print(f"  - {problem}", file=sys.stderr)
    if result.pairwise_accuracy is not None:
        from rlhfkit.train.reward_summary import length_rule

        stats = result.pairwise_accuracy
        rule, baseline = length_rule(stats["longer_baseline_accuracy"])
        print(
            f"pairwise accuracy: {stats['accuracy']:.3f} (95% interval "
            f"{stats['accuracy_ci95_low']:.3f} to {stats['accuracy_ci95_high']:.3f}) on "
            f"{stats['n']} pairs, {stats['ties']} ties counted as half; the better length "
            f"rule, {rule}, {baseline:.3f}",
            file=sys.stderr if not args.out else sys.stdout,
        )
    return 0


# ---------------------------------------------------------------- graders


def add_grader_commands(commands: argparse._SubParsersAction) -> None:
    sub = command_group(commands, "grader", "check and try a grader file")

    validate = sub.add_parser(
        "validate",
        help="check a grader file",
        description="Check every field of a grader file (YAML or JSON) and list all problems.",
    )
    validate.add_argument("path", metavar="GRADER.yaml")
    validate.set_defaults(handler=_grader_validate)

    run = sub.add_parser(
        "run",
        help="grade one answer with a grader file",
        description="Grade one answer against one dataset row; prints one JSON object with "
        "reward, sub_rewards, errors and execution_time (exit 0 even when the grade "
        "recorded errors).",
    )
    run.add_argument("path", metavar="GRADER.yaml")
    run.add_argument("--sample", required=True, metavar="TEXT", help="the answer to grade")
    item = run.add_mutually_exclusive_group()
    item.add_argument("--item", metavar="JSON", help="the dataset row as a JSON object")
    item.add_argument("--item-file", metavar="F.json", help="a file holding the row as JSON")
    run.add_argument(
        "--sandbox",
        metavar="MODE",
        help="how python graders are contained: auto (bubblewrap when it works here, else a "
        "warning), required (exit 2 without it) or off; default: $RLHFKIT_GRADER_SANDBOX, "
        "else auto",
    )
    run.set_defaults(handler=_grader_run)


def _grader_validate(args: argparse.Namespace) -> int:
    from rlhfkit.graders import load_grader
    from rlhfkit.graders.multi import MultiGrader

    def describe(grader, indent: str) -> None:
        print(f"{indent}{grader.type} grader {grader.name}")
        if isinstance(grader, MultiGrader):
            for sub in grader.graders.values():
                describe(sub, indent + "  ")

    grader = load_grader(args.path)
    print("valid: ", end="")
    describe(grader, "")
    return 0


def _grader_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlhfkit.graders import load_grader

    if args.item_file:
        try:
            text, where = Path(args.item_file).read_text(encoding="utf-8-sig"), args.item_file
        except OSError as exc:
            raise RlhfkitError(
                f"cannot read --item-file {args.item_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise RlhfkitError(
                f"--item-file {args.item_file} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} "
                f"at offset {exc.start}); save it as UTF-8"
            ) from None
    else:
        text, where = args.item or "{}", "--item"
    try:
        item = json.loads(text)
    except ValueError as exc:
        raise RlhfkitError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(item, dict):
        raise RlhfkitError(f"{where} must be a JSON object (the dataset row), got {text[:80]!r}")
    with load_grader(args.path, sandbox=args.sandbox) as grader:
        result = grader.grade(args.sample, item)
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0
