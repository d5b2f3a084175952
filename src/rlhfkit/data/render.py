"""Readable terminal output of `rlhfkit data inspect`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

PREVIEW_CHARS = 300


def _preview(text: str) -> str:
    """One line of model or user text, shortened and escaped (brackets are not markup)."""
    text = " ".join(text.split())
    text = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return escape(text)


def print_inspect_report(report: dict[str, Any], console: Console | None = None) -> None:
    # soft wrap: piped into a file or another program, lines stay whole (no 80-column cut)
    console = console or Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]{escape(report['path'])}[/bold]")
    console.print(
        f"kind: {report['kind']}   format: {report['format']}   rows: {report['rows']}   "
        f"tokenizer: {report['tokenizer']} "
        f"(chat template: {'on' if report['chat_template'] else 'off'})"
    )
    if "chosen_longer_fraction" in report:
        parts = []
        if "choice_balance" in report:
            balance = report["choice_balance"]
            parts.append(
                f"choice balance: candidate_0 preferred {balance['0']}, candidate_1 preferred "
                f"{balance['1']}"
            )
        epoch = report["steps_per_epoch"]
        parts += [
            f"chosen longer than rejected: {report['chosen_longer_fraction']:.1%}",
            f"rows with margin: {report['with_margin']}",
            f"one epoch: {epoch['steps']} step(s) at batch_size {epoch['batch_size']}",
        ]
        console.print("   ".join(parts))
    table = Table(title="lengths (min / median / p95 / max)")
    table.add_column("field")
    table.add_column("characters", justify="right")
    table.add_column("tokens", justify="right")
    for name, chars in report["length_chars"].items():
        toks = report["length_tokens"][name]
        table.add_row(name, _four(chars), _four(toks))
    console.print(table)
    cut = report["truncated"]
    console.print(
        f"truncation: {cut['prompts']} prompts over prompt_sequence_length="
        f"{cut['prompt_sequence_length']}, {cut['responses']} responses over "
        f"target_sequence_length={cut['target_sequence_length']} ({cut['rows']} rows affected)"
    )
    _print_duplicates_and_bad_rows(report, console)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for example in report["examples"]:
        console.rule(f"example {example['source']}")
        for turn in example["prompt"]:
            console.print(f"[cyan]{turn['role']}:[/cyan] {_preview(turn['content'])}")
        if "chosen" in example:
            console.print(f"[green]chosen:[/green] {_preview(example['chosen'])}")
            console.print(f"[red]rejected:[/red] {_preview(example['rejected'])}")
        if example.get("extra"):
            console.print(f"[dim]extra fields: {escape(', '.join(example['extra']))}[/dim]")
    for path in report.get("plots", []):
        console.print(f"plot: {escape(path)}")


def _print_duplicates_and_bad_rows(report: dict[str, Any], console: Console) -> None:
    dup = report["duplicates"]
    line = f"duplicates: {dup['prompts']} repeated prompts"
    if "pairs" in dup:
        line += f", {dup['pairs']} repeated pairs"
    if dup.get("conflicts"):
        line += (
            f", [yellow]{dup['conflicts']} conflicting pair(s)[/yellow] (the same prompt and "
            "answers, preferred one way in one row and the other way in another)"
        )
    console.print(line)
    bad = report["bad_rows"]
    if bad["rows"]:
        reasons = "; ".join(f"{n} x {reason}" for reason, n in bad["by_reason"].items())
        console.print(
            f"[yellow]bad rows:[/yellow] {bad['rows']} left out of these statistics: "
            f"{escape(reasons)}"
        )
        for problem in bad["first"]:
            console.print(f"  - {escape(problem)}")
        console.print(
            "  other commands stop at these rows; fix them, or pass bad_rows=skip "
            "(--bad-rows skip) to leave them out"
        )
    else:
        console.print("bad rows: none")


def _four(stats: dict[str, Any]) -> str:
    median = stats["median"]
    median = int(median) if float(median).is_integer() else median
    return f"{stats['min']} / {median} / {stats['p95']} / {stats['max']}"
