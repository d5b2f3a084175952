"""Vertex AI AutoSxS's parameters and metric names in `rlhfkit sxs`.

AutoSxS reads one `evaluation_dataset` whose rows hold both models' answers
(`response_column_a`, `response_column_b`), builds the autorater's prompt from
`autorater_prompt_parameters` (`inference_instruction`, `inference_context`: each
`{"template": TEXT}` or `{"column": NAME}`), names rows by `id_columns`, and writes
`autosxs_`-named win rates and, with `human_preference_column`, agreement metrics. Here the
same file, parameters and names work; model B is "the model" of AutoSxS's alignment
metrics (positive class), model A the baseline.
"""

from __future__ import annotations

from typing import Any

from rlhfkit.data.formats import Dataset, dataset_from_rows
from rlhfkit.data.reader import read_rows
from rlhfkit.errors import ConfigError, DatasetError
from rlhfkit.stats import win_rates

PROMPT_PARTS = ("inference_instruction", "inference_context")
"""The parts of the autorater's prompt, in the order they are joined (a blank line between)."""
PART_SOURCES = ("template", "column")


def check_prompt_parameters(parameters: dict[str, Any]) -> None:
    """`autorater_prompt_parameters` must map PROMPT_PARTS to {template: ...} or {column: ...}."""
    for part, spec in parameters.items():
        if part not in PROMPT_PARTS:
            raise ConfigError(
                f"autorater_prompt_parameters: unknown part {part!r}; use "
                f"{' and '.join(PROMPT_PARTS)}, each {{template: TEXT}} or {{column: NAME}}"
            )
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in PART_SOURCES):
            raise ConfigError(
                f"autorater_prompt_parameters.{part} is {spec!r}; give {{template: TEXT}} "
                "(the same text for every row) or {column: NAME} (the row's field)"
            )
        if not isinstance(next(iter(spec.values())), str):
            raise ConfigError(f"autorater_prompt_parameters.{part}: the value must be a string")


def evaluation_rows(
    path: str,
    prompt_parameters: dict[str, Any],
    id_columns: list[str],
    answer_columns: tuple[str, str],
) -> Dataset:
    """The rows of an AutoSxS evaluation dataset as prompt records: the prompt built from
    `prompt_parameters` (when given; else the row's own prompt fields), `id` from
    `id_columns` (joined with "/"), every field kept.

    Raises:
        DatasetError: rows lack a named column, listed with their file:line.
    """
    rows = read_rows(path)
    needed = [(f"response_column_{side}", c) for side, c in zip("ab", answer_columns, strict=True)]
    needed += [("id_columns", c) for c in id_columns]
    needed += [
        (f"autorater_prompt_parameters.{part}", spec["column"])
        for part, spec in prompt_parameters.items()
        if "column" in spec
    ]
    problems = [
        f"{source}: no field {column!r} (named by {what})"
        for source, row in rows
        for what, column in needed
        if row.get(column) in (None, "")
    ]
    problems += [
        f"{source}: {column}={row[column]!r} is not text (the answer of {what})"
        for source, row in rows
        for what, column in needed[:2]
        if row.get(column) not in (None, "") and not isinstance(row[column], str)
    ]
    if problems:
        raise DatasetError(
            f"evaluation_dataset {path}: {len(problems)} problem(s); fix these rows or name "
            "other columns",
            problems,
        )
    built = []
    for _, row in rows:
        out = dict(row)
        if prompt_parameters:
            out = {k: v for k, v in row.items() if k not in ("input_text", "prompt", "messages")}
            out["input_text"] = "\n\n".join(
                _part(prompt_parameters[part], row)
                for part in PROMPT_PARTS
                if part in prompt_parameters
            )
        if id_columns:
            out["id"] = "/".join(str(row[c]) for c in id_columns)
        built.append(out)
    return dataset_from_rows(built, "prompt", name=str(path))


def _part(spec: dict[str, str], row: dict[str, Any]) -> str:
    return spec["template"] if "template" in spec else str(row[spec["column"]])


def autosxs_metrics(metrics: dict[str, Any], humans: list[str | None]) -> dict[str, Any]:
    """AutoSxS's names for the figures of `metrics` (those of `sxs_metrics`), and the
    humans' own win rates over the labelled pairs."""
    out = {f"autosxs_{k}": metrics[k] for k in ("model_a_win_rate", "model_b_win_rate")}
    labelled = [h for h in humans if h is not None]
    if labelled:
        human = win_rates(labelled)
        for side in ("a", "b"):
            out[f"autosxs_human_preference_model_{side}_win_rate"] = human[f"model_{side}_win_rate"]
        for name in ("accuracy", "precision", "recall", "f1_score", "cohens_kappa"):
            out[f"autosxs_{name}"] = metrics[name]
    return out
