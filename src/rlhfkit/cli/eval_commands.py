"""`rlhfkit run`, `demo`, `infer`, `sxs`, `plot` and `report`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING

from rlhfkit.cli_help import add_parameters_help
from rlhfkit.demo import DEMO_CONFIG, EXAMPLES

if TYPE_CHECKING:
    from rlhfkit.pipeline import PipelineConfig
from rlhfkit.cli.common import (
    add_config_arguments,
    stage_command,
)

UNREADABLE_WARNING = 0.1
"""Share of side-by-side pairs without a readable judgment above which `sxs` warns."""


# ---------------------------------------------------------------- pipeline


def add_pipeline_command(commands: argparse._SubParsersAction) -> None:
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


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
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
