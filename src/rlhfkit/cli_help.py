"""Help that teaches: every parameter of a stage command in its `--help`, examples, and
"did you mean" for a misspelled command.

The parameters come from the same config dataclasses as docs/config-reference.md
(`rlhfkit.docs`), imported only when help is asked for, so that `rlhfkit` starts fast.

The rule for arguments, the same in every command: a stage command (one that runs a stage
of the pipeline or the whole of it) takes its parameters as `key=value`, or as the keys of
a `--config` YAML file; a command that acts on a file or folder it is given (data inspect
and convert, score, export-reward, plot, report, grader, label stats) takes flags.
`data inspect` takes both: flags for what to show, `key=value` for how text becomes tokens.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import shutil
import textwrap
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageHelp:
    """What a stage command's help lists: config classes ("module:Class"), each with a
    heading, example command lines, and where the parameters' values come from."""

    configs: tuple[tuple[str, str], ...]
    examples: tuple[str, ...]
    given_as: str = "key=value, or the keys of a --config YAML file"


DEMO = "examples/demo"
STAGE_HELP: dict[str, StageHelp] = {
    "run": StageHelp(
        (("rlhfkit.pipeline:PipelineConfig", "parameters"),),
        (
            f"rlhfkit run --config {DEMO}/pipeline.yaml",
            f"rlhfkit run preference_dataset={DEMO}/preferences.jsonl "
            f"prompt_dataset={DEMO}/prompts.jsonl reward_model_train_steps=100 "
            "reinforcement_learning_train_steps=20 output_dir=runs/mine",
        ),
    ),
    "demo": StageHelp(
        (("rlhfkit.pipeline:PipelineConfig", "parameters"),),
        (
            "rlhfkit demo output_dir=runs/demo seed=1",
            "rlhfkit demo reinforcement_learning_train_steps=20 output_dir=runs/demo_20",
        ),
        "key=value, over the values of the demo config that rlhfkit demo --print-config shows",
    ),
    "train-reward": StageHelp(
        (("rlhfkit.train.reward_config:RewardConfig", "parameters"),),
        (
            f"rlhfkit train-reward preference_dataset={DEMO}/preferences.jsonl num_epochs=1 "
            "output_dir=runs/rm",
            f"rlhfkit train-reward preference_dataset={DEMO}/preferences.jsonl "
            "reward_model_train_steps=0 eval_fraction=0.3 output_dir=runs/rm_fit",
        ),
    ),
    "train-dpo": StageHelp(
        (("rlhfkit.train.dpo_config:DPOConfig", "parameters"),),
        (
            f"rlhfkit train-dpo preference_dataset={DEMO}/preferences.jsonl output_dir=runs/dpo",
            f"rlhfkit train-dpo preference_dataset={DEMO}/preferences.jsonl loss_type=ipo "
            "beta=0.5 n_epochs=2 output_dir=runs/ipo",
        ),
    ),
    "train-rl": StageHelp(
        (
            ("rlhfkit.train.rl_config:RLCommonConfig", "parameters of every method"),
            ("rlhfkit.train.ppo:RLConfig", "method=ppo (the default)"),
            ("rlhfkit.train.grpo:GRPOConfig", "method=grpo and method=rloo"),
        ),
        (
            f"rlhfkit train-rl prompt_dataset={DEMO}/prompts.jsonl reward_model=runs/rm/"
            "reward_model reinforcement_learning_train_steps=20 output_dir=runs/ppo",
            f"rlhfkit train-rl method=rloo prompt_dataset={DEMO}/prompts.jsonl "
            "grader=examples/graders/summary_content.yaml compute_multiplier=4 "
            "output_dir=runs/rloo",
        ),
    ),
    "infer": StageHelp(
        (("rlhfkit.eval.infer:InferConfig", "parameters"),),
        (
            f"rlhfkit infer model=runs/ppo prompt_dataset={DEMO}/eval_prompts.jsonl "
            "out=runs/ppo/answers.jsonl",
            f"rlhfkit infer prompt_dataset={DEMO}/eval_prompts.jsonl temperature=0.8 "
            "out=base_sampled.jsonl",
        ),
    ),
    "sxs": StageHelp(
        (("rlhfkit.eval.sxs:SxSConfig", "parameters"),),
        (
            "rlhfkit sxs a=base.jsonl b=tuned.jsonl "
            "autorater=grader:examples/graders/summary_content.yaml out=runs/sxs",
            "rlhfkit sxs a=base.jsonl b=tuned.jsonl autorater=reward_model:runs/rm/reward_model "
            "out=runs/sxs_rm",
        ),
    ),
    "data synth": StageHelp(
        (("rlhfkit.eval.synth:SynthConfig", "parameters"),),
        (
            f"rlhfkit data synth prompt_dataset={DEMO}/prompts.jsonl "
            "grader=examples/graders/summary_content.yaml out=pairs.jsonl",
            f"rlhfkit data synth prompt_dataset={DEMO}/prompts.jsonl "
            "judge=http://localhost:8000/v1 out=pairs.jsonl",
        ),
    ),
    "data inspect": StageHelp(
        (("rlhfkit.data.config:DataConfig", "parameters (key=value)"),),
        (
            f"rlhfkit data inspect {DEMO}/preferences.jsonl --plot plots/",
            f"rlhfkit data inspect {DEMO}/prompts.jsonl --json prompt_sequence_length=256",
        ),
    ),
    "label serve": StageHelp(
        (("rlhfkit.label.server:LabelServeConfig", "parameters"),),
        (
            "rlhfkit label serve run=runs/demo db=labels.db",
            "rlhfkit label serve a=base.jsonl b=tuned.jsonl db=labels.db port=8765",
        ),
    ),
    "label to-labelstudio": StageHelp(
        (("rlhfkit.label.labelstudio:LabelStudioTasksConfig", "parameters"),),
        (
            "rlhfkit label to-labelstudio pairs=pairs.jsonl db=labels.db out=tasks.json",
            "rlhfkit label to-labelstudio run=runs/demo out=tasks.json strength=true",
        ),
    ),
    "label from-labelstudio": StageHelp(
        (("rlhfkit.label.labelstudio:LabelStudioImportConfig", "parameters"),),
        ("rlhfkit label from-labelstudio export.json db=labels.db",),
    ),
    "label export": StageHelp(
        (("rlhfkit.label.export:LabelExportConfig", "parameters"),),
        (
            "rlhfkit label export labels.db out=human_prefs.jsonl",
            "rlhfkit label export labels.db out=human_prefs.jsonl min_labellers=2",
        ),
    ),
}
"""Every stage command (by its words after `rlhfkit`), what its help lists."""


def config_class(reference: str) -> type:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def parameter_rows(help_: StageHelp) -> list[tuple[str, list[tuple[str, str, Any, str]]]]:
    """(heading, rows of (name, type, default, help)) per config class: every field of the
    first; of the others only what they add or give another default."""
    from rlhfkit.config import field_help

    sections, seen = [], {}
    for reference, heading in help_.configs:
        rows = [r for r in field_help(config_class(reference)) if seen.get(r[0]) != repr(r)]
        seen.update({r[0]: repr(r) for r in rows})
        sections.append((heading, rows))
    return sections


def parameters_text(help_: StageHelp, width: int | None = None) -> str:
    """The parameters and examples as the end of a command's --help."""
    width = width or min(100, shutil.get_terminal_size((100, 24)).columns)
    lines = []
    for heading, rows in parameter_rows(help_):
        lines.append(f"\n{heading} ({help_.given_as}):")
        for name, type_name, default, text in rows:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            lines.append(f"  {name}  ({type_name}, default: {shown})")
            lines += textwrap.wrap(text, width, initial_indent="      ", subsequent_indent="      ")
    lines.append("\nexamples:")
    lines += [f"  {example}" for example in help_.examples]
    return "\n".join(lines) + "\n"


class ParametersHelp(argparse.Action):
    """-h/--help that also lists every parameter of the command and two examples."""

    def __init__(self, option_strings, dest, stage_help: StageHelp, **kwargs) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show this help with every parameter and examples, then exit",
        )
        self.stage_help = stage_help

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.print_help()
        print(parameters_text(self.stage_help))
        parser.exit()


def add_parameters_help(parser: argparse.ArgumentParser, command: str) -> None:
    """Give `parser` (made with add_help=False) a -h/--help that also lists `command`'s
    parameters and examples (STAGE_HELP)."""
    parser.add_argument("-h", "--help", action=ParametersHelp, stage_help=STAGE_HELP[command])


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelled command (its subparsers are too)."""

    def error(self, message: str):
        match = _INVALID_CHOICE.search(message)
        if match and message.startswith("argument COMMAND:"):  # other choices read as they were
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.6)
            message = f"unknown command '{match.group(1)}'" + (
                f"; did you mean '{close[0]}'?"
                if close
                else f"; choose one of {', '.join(choices)}"
            )
        super().error(message)


def check_stage_help() -> list[str]:
    """Problems with STAGE_HELP: an example key that is no parameter of its command."""
    problems = []
    for command, help_ in STAGE_HELP.items():
        names = {name for _, rows in parameter_rows(help_) for name, *_ in rows}
        for example in help_.examples:
            for key in re.findall(r"(?:^|\s)([a-z_]+)=", example):
                if key not in names:
                    problems.append(f"{command}: example key {key!r} is not a parameter")
    return problems
