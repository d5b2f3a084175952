"""`rlhfkit data ...` and `rlhfkit model check`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from rlhfkit.data.convert import TARGETS
from rlhfkit.fileio import check_output_path

if TYPE_CHECKING:
    pass
from rlhfkit.cli.common import (
    add_bad_rows_argument,
    add_config_arguments,
    command_group,
    positive_int,
    stage_command,
)

# ---------------------------------------------------------------- data


def add_data_commands(commands: argparse._SubParsersAction) -> None:
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
        description="Convert a dataset to the rlhf_pipeline (rlhf), TRL (trl) or OpenAI "
        "fine-tuning (openai: preference fine-tuning rows, or RFT prompt rows) format.",
    )
    convert.add_argument("src", help="input dataset (any supported format)")
    convert.add_argument("dst", help="output .jsonl or .jsonl.gz")
    convert.add_argument("--to", required=True, choices=TARGETS)
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


def add_model_commands(commands: argparse._SubParsersAction) -> None:
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
