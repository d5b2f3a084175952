"""The `rlhfkit` command line.

Every stage command takes `--config FILE.yaml` and `key=value` overrides whose keys are
the parameter names of that stage's config dataclass (`rlhfkit demo`: overrides of the
packaged demo config). A user mistake (bad data, bad
config, a missing model) prints a readable message and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from rlhfkit import __version__
from rlhfkit.cli_help import Parser, add_parameters_help
from rlhfkit.demo import DEMO_CONFIG, EXAMPLES
from rlhfkit.errors import RlhfkitError
from rlhfkit.fileio import check_output_path, file_error

if TYPE_CHECKING:
    from rlhfkit.pipeline import PipelineConfig

Handler = Callable[[argparse.Namespace], int]
UNREADABLE_WARNING = 0.1
"""Share of side-by-side pairs without a readable judgment above which `sxs` warns."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come before or after options; argparse leaves late ones over
    if (
        extra
        and hasattr(args, "overrides")
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if rank > 0:  # a distributed run's other ranks: rank 0 reports; errors still show
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(args.verbose, rank))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
        handlers=[handler],
    )
    _quiet_libraries(args.verbose)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        code = args.handler(args)
        if code == 0 and world > 1:
            from rlhfkit.train.parallel import leave_process_group

            leave_process_group()
        return code
    except RlhfkitError as exc:
        print(f"{f'[rank {rank}] ' if rank else ''}error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the user gave: missing, a file, not writable, full disk
        if exc.filename is None:
            raise
        print(f"{f'[rank {rank}] ' if rank else ''}error: {file_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if world < 2:
            raise
        from rlhfkit.train.parallel import peer_failure

        lost = peer_failure(exc)
        if lost is None:
            raise
        print(f"[rank {rank}] error: {lost}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rlhfkit",
        description="Align language models with human preferences on your own machine.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_data_commands(commands)
    _add_model_commands(commands)
    _add_reward_commands(commands)
    _add_grader_commands(commands)
    _add_eval_commands(commands)
    _add_label_commands(commands)
    _add_launch_command(commands)
    _add_pipeline_command(commands)
    return parser


class LogFormatter(logging.Formatter):
    """Log lines for people: progress as the message alone, problems after "warning:" or
    "error:"; with --verbose, every line names its level and module."""

    def __init__(self, verbose: bool, rank: int) -> None:
        super().__init__()
        self.verbose = verbose
        self.prefix = f"[rank {rank}] " if rank else ""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and self.verbose:
            message += "\n" + self.formatException(record.exc_info)
        elif record.exc_info and record.exc_info[1] is not None:  # the reason, in one line
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc})"
        if self.verbose:
            return f"{self.prefix}{record.levelname} {record.name}: {message}"
        if record.levelno >= logging.WARNING:
            return f"{self.prefix}{record.levelname.lower()}: {message}"
        return f"{self.prefix}{message}"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE.yaml` and trailing `key=value` overrides, for every stage command; its
    --help lists every parameter (`rlhfkit.cli_help`)."""
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of parameters")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="parameters, overriding --config"
    )
    add_parameters_help(parser, parser.prog.removeprefix("rlhfkit "))


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_bad_rows_argument(parser: argparse.ArgumentParser, beside: str) -> None:
    """`--bad-rows error|skip`: the flag form of the stage commands' `bad_rows=`."""
    parser.add_argument(
        "--bad-rows",
        choices=("error", "skip"),
        default="error",
        help="invalid rows: error (stop, listing every problem) or skip (leave them out, "
        f"counted by reason, printed, and listed beside {beside})",
    )


def stage_command(
    commands: argparse._SubParsersAction, name: str, handler: Handler, **texts: str
) -> argparse.ArgumentParser:
    """A command whose parameters are `--config FILE.yaml` and `key=value` overrides."""
    parser = commands.add_parser(name, add_help=False, **texts)
    add_config_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def command_group(
    commands: argparse._SubParsersAction, name: str, help: str
) -> argparse._SubParsersAction:
    """A command with commands under it (`rlhfkit data ...`); alone it prints its help."""
    group = commands.add_parser(name, help=help)
    group.set_defaults(handler=lambda _args: group.print_help() or 2)
    return group.add_subparsers(title=f"{name} commands", metavar="COMMAND")


# ---------------------------------------------------------------- data


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    sub = command_group(commands, "data", "inspect and convert datasets")

    inspect = sub.add_parser(
        "inspect",
        add_help=False,
        help="statistics of a preference or prompt dataset",
        description="Detect the format, validate every row and report statistics.",
    )
    inspect.add_argument("path", help="a .jsonl, .jsonl.gz or .json file, a folder or a glob")
    inspect.add_argument("--kind", choices=("preference", "prompt"), help="default: detected")
    inspect.add_argument("--model", help="tokenizer to count tokens with (large_model_reference)")
    inspect.add_argument("--plot", metavar="DIR", help="write PNG histograms of token lengths")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--strict", action="store_true", help="exit 2 when some rows are invalid (default: 0)"
    )
    inspect.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="count a preference dataset's steps per epoch at N pairs (default: train-reward's 16)",
    )
    add_config_arguments(inspect)
    inspect.set_defaults(handler=_data_inspect)

    convert = sub.add_parser(
        "convert",
        help="write a dataset in another format",
        description="Convert a dataset to the rlhf_pipeline (rlhf) or TRL (trl) format.",
    )
    convert.add_argument("src", help="input dataset (any supported format)")
    convert.add_argument("dst", help="output .jsonl or .jsonl.gz")
    convert.add_argument("--to", required=True, choices=("rlhf", "trl"))
    convert.add_argument("--kind", choices=("preference", "prompt"), help="default: detected")
    add_bad_rows_argument(convert, "DST")
    convert.set_defaults(handler=_data_convert)

    stage_command(
        sub,
        "synth",
        help="make a preference dataset from AI feedback (a grader or a judge labels pairs)",
        description="Sample two candidate answers per prompt from a model and let a grader "
        "(grader=FILE) or a pairwise judge (judge=MODEL_OR_URL) pick the better one; writes "
        "an rlhf_pipeline preference file.",
        handler=_data_synth,
    )


def _data_inspect(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.data.config import DataConfig
    from rlhfkit.data.formats import load_dataset
    from rlhfkit.data.inspect import REWARD_BATCH_SIZE, inspect_dataset, write_plots
    from rlhfkit.data.render import print_inspect_report
    from rlhfkit.models import load_tokenizer

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"large_model_reference={args.model}")
    config = load_config(DataConfig, args.config, overrides)
    if args.plot:
        check_output_path(args.plot, folder=True)
    # row problems are statistics here: the valid rows are described, the others counted
    dataset = load_dataset(args.path, kind=args.kind, bad_rows="skip")
    tokenizer = load_tokenizer(config.large_model_reference)
    report = inspect_dataset(dataset, tokenizer, config, args.batch_size or REWARD_BATCH_SIZE)
    if args.plot:
        report["plots"] = [str(p) for p in write_plots(report, args.plot)]
    report.pop("_token_lengths")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_inspect_report(report)
    return 2 if args.strict and dataset.dropped else 0


def _data_convert(args: argparse.Namespace) -> int:
    from rlhfkit.data.convert import convert_file

    count = convert_file(args.src, args.dst, to=args.to, kind=args.kind, bad_rows=args.bad_rows)
    print(f"wrote {count} rows in {args.to} format to {args.dst}")
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.eval.synth import SynthConfig, synthesize

    result = synthesize(load_config(SynthConfig, args.config, args.overrides))
    dropped = ", ".join(f"{n} {k}" for k, n in result.dropped.items() if n) or "none"
    print(
        f"wrote {result.pairs} preference pairs from {result.prompts} prompts to {result.out} "
        f"(left out: {dropped}); candidate_0 chosen in {result.candidate_0_chosen:.1%}"
    )
    return 0


# ---------------------------------------------------------------- models


def _add_model_commands(commands: argparse._SubParsersAction) -> None:
    sub = command_group(commands, "model", "load and try a model")
    check = sub.add_parser(
        "check",
        help="load a model and answer one chat prompt",
        description="Resolve a model reference (converting the bundled model on first use), "
        "print what was loaded and answer a prompt greedily.",
    )
    check.add_argument("reference", nargs="?", default=None, help="default: the bundled model")
    check.add_argument("--prompt", default="In one sentence, what is a reward model?")
    check.add_argument("--max-new-tokens", type=int, default=48)
    check.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"))
    check.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    check.set_defaults(handler=_model_check)


def _model_check(args: argparse.Namespace) -> int:
    import time

    from rlhfkit.data.prompts import PromptEncoder
    from rlhfkit.data.records import Message
    from rlhfkit.models import DEFAULT_MODEL, load_model, load_tokenizer
    from rlhfkit.models.generate import generate_text

    reference = args.reference or DEFAULT_MODEL
    start = time.perf_counter()
    tokenizer = load_tokenizer(reference)
    model = load_model(reference, dtype=args.dtype, device=args.device)
    loaded = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(f"model:   {reference} ({model.config.model_type}, {params / 1e6:.1f}M parameters)")
    print(f"device:  {model.device}, dtype {model.dtype}, loaded in {loaded:.1f}s")
    encoder = PromptEncoder(tokenizer, prompt_sequence_length=512)
    prompt = encoder.encode_prompt((Message("user", args.prompt),)).ids
    start = time.perf_counter()
    (answer,) = generate_text(model, tokenizer, [prompt], max_new_tokens=args.max_new_tokens)
    print(f"prompt:  {args.prompt}")
    print(f"answer:  {answer}")
    print(f"time:    {time.perf_counter() - start:.1f}s")
    return 0


# ---------------------------------------------------------------- reward model


def _add_reward_commands(commands: argparse._SubParsersAction) -> None:
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


def _train_reward(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.train.reward import RewardConfig, result_lines, train_reward_model

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
        from rlhfkit.train.reward import length_rule

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


def _add_grader_commands(commands: argparse._SubParsersAction) -> None:
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


# ---------------------------------------------------------------- pipeline


def _add_pipeline_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        add_help=False,
        help="run the whole RLHF pipeline (reward model, RL, inference, side by side, report)",
        description="Validate the inputs, import the datasets, train the reward model, tune "
        "the policy, answer the eval prompts with the base and the tuned model, compare them "
        "side by side and write the report. Finished stages whose inputs are unchanged are "
        "skipped; an interrupted stage continues.",
    )
    run.add_argument(
        "--from-stage",
        metavar="NAME",
        help="run again from this stage: import, reward_model, rl, infer, sxs or report",
    )
    add_config_arguments(run)
    run.set_defaults(handler=_run_pipeline)

    demo = commands.add_parser(
        "demo",
        add_help=False,
        help="run the demo pipeline (what `make demo` runs) on the example files installed "
        "with rlhfkit",
        description=f"`rlhfkit run --config {DEMO_CONFIG}` from any working directory: the "
        "config's data and grader files are the packaged ones; output_dir (default runs/demo) "
        "and the paths you give start at the working directory. The example files (the "
        f"demo's data and config, graders, accelerate configs) are in {EXAMPLES}.",
    )
    demo.add_argument(
        "--print-config",
        action="store_true",
        help="print the demo config's path and contents (to copy), then exit",
    )
    demo.add_argument(
        "overrides", nargs="*", metavar="key=value", help="parameters, overriding the demo config"
    )
    add_parameters_help(demo, "demo")
    demo.set_defaults(handler=_demo)


def _run_pipeline(args: argparse.Namespace) -> int:
    from rlhfkit.pipeline import load_pipeline_config

    overrides = list(args.overrides)
    if args.from_stage:
        overrides.append(f"from_stage={args.from_stage}")
    return _run_and_summarize(load_pipeline_config(args.config, overrides))


def _demo(args: argparse.Namespace) -> int:
    from rlhfkit.demo import check_bundled_model, demo_config_text, load_demo_config

    if args.print_config:
        print(demo_config_text(), end="")
        return 0
    config = load_demo_config(args.overrides)
    check_bundled_model(config.large_model_reference)
    return _run_and_summarize(config)


def _run_and_summarize(config: PipelineConfig) -> int:
    from rlhfkit.pipeline import run_pipeline, summary_lines

    result = run_pipeline(config)
    print("\n".join(["== summary", *summary_lines(result.summary)]))
    return 0


# ---------------------------------------------------------------- evaluation


def _add_eval_commands(commands: argparse._SubParsersAction) -> None:
    stage_command(
        commands,
        "infer",
        help="answer every prompt of a dataset with a model (bulk inference)",
        description="Run a model (reference, folder, adapter or RL run directory) on every "
        "prompt; writes the input rows with `prediction` added.",
        handler=_infer,
    )

    stage_command(
        commands,
        "sxs",
        help="compare two models' answers side by side with an autorater",
        description="Judge a's answers against b's (prediction files, or models run first) "
        "with reward_model:DIR, grader:FILE or judge:MODEL_OR_URL; writes judgments.jsonl "
        "and metrics.json.",
        handler=_sxs,
    )

    plot = commands.add_parser(
        "plot",
        help="draw a PNG per logged scalar of a run",
        description="Read metrics.jsonl (of the run, or of each stage of a pipeline run) and "
        "draw each scalar, smoothed, with the raw values faint behind.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", metavar="DIR", help="default: RUN_DIR/plots")
    plot.add_argument("--smoothing", type=float, default=0.6, help="EMA weight in [0, 1)")
    plot.set_defaults(handler=_plot)

    report = commands.add_parser(
        "report",
        help="write one self-contained report.html for a run",
        description="The verdict first (who wins each side by side, with its 95% interval; "
        "the reward model's held-out accuracy; the held-out reward before and after RL), "
        "then the curves by stage, the answers side by side, every figure and the config, "
        "in one HTML file with no scripts and nothing loaded from elsewhere.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", metavar="FILE.html", help="default: RUN_DIR/report.html")
    report.add_argument(
        "--sxs", action="append", metavar="DIR", help="an sxs folder outside RUN_DIR (repeatable)"
    )
    report.add_argument("--smoothing", type=float, default=0.6, help="EMA weight in [0, 1)")
    report.set_defaults(handler=_report)


def _infer(args: argparse.Namespace) -> int:
    from rlhfkit.eval.infer import infer, load_infer_config

    result = infer(load_infer_config(args.config, args.overrides))
    resumed = f" ({result.resumed_rows} from an interrupted run)" if result.resumed_rows else ""
    print(f"wrote {result.rows} predictions{resumed} by {result.model} to {result.out}")
    print("\n".join(result.dropped_rows), end="\n" if result.dropped_rows else "")
    return 0


def _sxs(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.eval.sxs import SxSConfig, run_sxs

    result = run_sxs(load_config(SxSConfig, args.config, args.overrides))
    m = result.metrics
    lines = [
        f"{m['n']} pairs judged by {m['autorater']}"
        f" ({m['invalid_judgments']} without a readable judgment, "
        f"{m['malformed_judge_outputs']} malformed judge answers)",
        *(
            f"{side} win rate {m[f'{key}_win_rate']:.3f} "
            f"(95% interval {m[f'{key}_win_rate_ci95'][0]:.3f} to "
            f"{m[f'{key}_win_rate_ci95'][1]:.3f})"
            for side, key in (("A", "model_a"), ("B", "model_b"))
        ),
        f"tie rate {m['tie_rate']:.3f}",
    ]
    if "cohens_kappa" in m:
        lines.append(
            f"against {m['human_compared']} human labels: accuracy {m['accuracy']:.3f}, "
            f"F1 {m['f1_score']:.3f}, Cohen's kappa {m['cohens_kappa']:.3f}"
        )
    lines.append(f"judgments and metrics: {result.out}")
    print("\n".join(lines))
    pairs, unreadable = m["pairs"], m["invalid_judgments"]
    if pairs and unreadable == pairs:
        print(
            f"error: no pair could be judged: the autorater gave no readable judgment for any "
            f"of {pairs} pairs; check the judge (its URL, model and prompt) and try again",
            file=sys.stderr,
        )
        return 1
    if unreadable > UNREADABLE_WARNING * pairs:
        print(
            f"warning: {unreadable} of {pairs} pairs ({unreadable / pairs:.0%}) have no readable "
            "judgment; the win rates count only the others",
            file=sys.stderr,
        )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from rlhfkit.eval.plot import plot_run

    written = plot_run(args.run_dir, args.out, args.smoothing)
    folders = Counter(str(path.parent) for path in written)
    where = ", ".join(f"{n} to {folder}" for folder, n in folders.items()) or f"to {args.out}"
    print(f"wrote {len(written)} plots: {where} (tensorboard --logdir {args.run_dir})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from rlhfkit.eval.report import write_report

    path = write_report(args.run_dir, args.out, args.sxs, args.smoothing)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- several processes


def _add_launch_command(commands: argparse._SubParsersAction) -> None:
    launch = commands.add_parser(
        "launch",
        help="run train-reward or train-rl data-parallel on N processes (torchrun)",
        description="rlhfkit launch nproc=N [threads=T] COMMAND ARGS...: starts N processes "
        "with PyTorch's elastic launcher (torchrun) and trains data-parallel (DDP); gloo "
        "on CPU, NCCL on GPUs. For several machines use torchrun or accelerate launch "
        "directly (see docs/models-and-scale-out.md).",
    )
    launch.add_argument("rest", nargs=argparse.REMAINDER, metavar="nproc=N COMMAND ...")
    launch.set_defaults(handler=_launch)


def _launch(args: argparse.Namespace) -> int:
    from rlhfkit.errors import ConfigError
    from rlhfkit.train.launch import launch

    settings = {"nproc": "", "threads": "0"}
    rest = list(args.rest)
    while rest and rest[0].split("=", 1)[0] in settings and "=" in rest[0]:
        key, value = rest.pop(0).split("=", 1)
        settings[key] = value
    if not settings["nproc"].isdigit() or not settings["threads"].isdigit():
        raise ConfigError(
            "usage: rlhfkit launch nproc=N [threads=T] train-reward|train-rl key=value ... "
            f"(nproc={settings['nproc']!r}, threads={settings['threads']!r})"
        )
    return launch(int(settings["nproc"]), rest, int(settings["threads"]))


# ---------------------------------------------------------------- human labels


def _add_label_commands(commands: argparse._SubParsersAction) -> None:
    sub = command_group(commands, "label", "human feedback: judge pairs in the browser")

    stage_command(
        sub,
        "serve",
        help="serve a local page where people choose the better of two answers",
        description="Serve the labelling page for pairs=FILE, run=RUN_DIR or a=FILE b=FILE; "
        "judgments go to db=labels.db (SQLite). Prints the page's URL and access token.",
        handler=_label_serve,
    )

    export = sub.add_parser(
        "export",
        add_help=False,
        help="write the judgments as a preference dataset and a human column for sxs",
        description="Majority verdict per item: A/B become rlhf_pipeline preference rows "
        "(out=), every verdict a row of the human file (human_preference column) for "
        "`rlhfkit sxs`.",
    )
    export.add_argument("db", metavar="DB", help="the label store (labels.db)")
    add_config_arguments(export)
    export.set_defaults(handler=_label_export)

    stats = sub.add_parser(
        "stats",
        help="judgments per labeller and agreement (Cohen's kappa) between labellers",
    )
    stats.add_argument("db", metavar="DB", help="the label store (labels.db)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=_label_stats)


def _label_serve(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.label.server import LabelServeConfig, serve

    return serve(load_config(LabelServeConfig, args.config, args.overrides))


def _label_export(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.label.export import LabelExportConfig, export_labels

    config = load_config(LabelExportConfig, args.config, args.overrides)
    result = export_labels(args.db, config)
    left = {k: v for k, v in result.counts.items() if k not in ("exported", "ties")}
    print(
        f"wrote {result.preferences} preference pairs to {result.out} "
        f"({result.counts.get('ties', 0)} ties are only in the human file)"
    )
    print(f"wrote {result.human} human verdicts to {result.human_out}")
    if left:
        print(
            "left out: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(left.items()))
        )
    print(
        f"train on it: rlhfkit train-reward preference_dataset={result.out}\n"
        f"measure an autorater: rlhfkit sxs a={result.human_out} b={result.human_out} "
        "response_column_a=answer_a response_column_b=answer_b "
        "human_preference_column=human_preference autorater=..."
    )
    return 0


def _label_stats(args: argparse.Namespace) -> int:
    from rlhfkit.label.export import label_stats, stats_lines

    stats = label_stats(args.db)
    print(json.dumps(stats) if args.json else "\n".join(stats_lines(stats)))
    return 0


def _quiet_libraries(verbose: bool) -> None:
    if verbose:
        return
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", module="transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for name in ("transformers", "huggingface_hub", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    raise SystemExit(main())
