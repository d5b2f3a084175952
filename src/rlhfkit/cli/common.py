"""What every command is built from: `--config` and `key=value` overrides, shared flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from rlhfkit.cli_help import add_parameters_help

if TYPE_CHECKING:
    pass

Handler = Callable[[argparse.Namespace], int]


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
