"""`rlhfkit launch` (several processes) and `rlhfkit label ...`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass
from rlhfkit.cli.common import (
    add_config_arguments,
    command_group,
    stage_command,
)

# ---------------------------------------------------------------- several processes


def add_launch_command(commands: argparse._SubParsersAction) -> None:
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


def add_label_commands(commands: argparse._SubParsersAction) -> None:
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
    add_labelstudio_commands(sub)


def add_labelstudio_commands(sub: argparse._SubParsersAction) -> None:
    stage_command(
        sub,
        "to-labelstudio",
        help="write the pairs as Label Studio tasks and its labelling config",
        description="Writes out=tasks.json (import it in a Label Studio project) and "
        "tasks.xml (the project's labelling interface); the items go into db=labels.db, "
        "which from-labelstudio reads.",
        handler=_to_labelstudio,
    )
    back = sub.add_parser(
        "from-labelstudio",
        add_help=False,
        help="store a Label Studio JSON export as judgments (then label export/stats)",
        description="Reads Label Studio's Export > JSON (or JSON-MIN) of tasks that "
        "to-labelstudio wrote and stores each annotation as its annotator's judgment in db=.",
    )
    back.add_argument("export", metavar="EXPORT", help="Label Studio's JSON export file")
    add_config_arguments(back)
    back.set_defaults(handler=_from_labelstudio)


def _to_labelstudio(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.label.labelstudio import LabelStudioTasksConfig, write_tasks

    result = write_tasks(load_config(LabelStudioTasksConfig, args.config, args.overrides))
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.tasks} Label Studio tasks to {result.out} ({result.added} new items)")
    print(
        f"wrote the labelling config to {result.config}: in Label Studio, create a project, "
        "paste it under Settings > Labeling Interface > Code, import the tasks; then "
        "Export > JSON and run rlhfkit label from-labelstudio EXPORT.json"
    )
    return 0


def _from_labelstudio(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.label.labelstudio import LabelStudioImportConfig, import_export

    config = load_config(LabelStudioImportConfig, args.config, args.overrides)
    result = import_export(args.export, config)
    c = result.counts
    print(
        f"imported into {config.db}: {c['new']} new, {c['replaced']} replaced, "
        f"{c['unchanged']} unchanged judgment(s); stored {c['votes']} vote(s) and "
        f"{c['skips']} skip(s) (cancelled annotations); {c['without a choice']} "
        "annotation(s) without a choice left out"
    )
    for labeller, n in sorted(result.labellers.items()):
        print(f"  {labeller}: {n} judgment(s) stored")
    print(f"next: rlhfkit label stats {config.db}; rlhfkit label export {config.db} out=...")
    return 0


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
