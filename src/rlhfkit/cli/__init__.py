"""The `rlhfkit` command line.

Every stage command takes `--config FILE.yaml` and `key=value` overrides whose keys are
the parameter names of that stage's config dataclass (`rlhfkit demo`: overrides of the
packaged demo config). A user mistake (bad data, bad
config, a missing model) prints a readable message and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rlhfkit import __version__
from rlhfkit.cli.chat_commands import add_chat_commands
from rlhfkit.cli.data_commands import add_data_commands, add_model_commands
from rlhfkit.cli.eval_commands import add_eval_commands, add_pipeline_command
from rlhfkit.cli.label_commands import add_label_commands, add_launch_command
from rlhfkit.cli.train_commands import (
    add_export_command,
    add_grader_commands,
    add_reward_commands,
)
from rlhfkit.cli_help import Parser
from rlhfkit.errors import RlhfkitError
from rlhfkit.fileio import file_error
from rlhfkit.train.launch import started_by_torchrun


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader went away (`rlhfkit ... --help | head`): stop quietly, as other tools
        # do; what is left to flush goes nowhere instead of raising again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(argv: list[str] | None) -> int:
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
        if code == 0 and (world > 1 or started_by_torchrun()):
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
    add_data_commands(commands)
    add_model_commands(commands)
    add_reward_commands(commands)
    add_export_command(commands)
    add_grader_commands(commands)
    add_eval_commands(commands)
    add_chat_commands(commands)
    add_label_commands(commands)
    add_launch_command(commands)
    add_pipeline_command(commands)
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
