"""`multi`: named sub-graders combined by a `calculate_output` formula.

Each sub-grader scores the whole batch (so batching is kept), then the formula (see
`formula`) is evaluated per sample over the sub-graders' rewards. `sub_rewards` holds
every sub-grader's reward. When a sub-grader recorded an error for a sample, that
sample's reward is 0.0 (a formula like `1 - a` must not turn a failure into a reward)
and the error is passed on; a math error in the formula is recorded the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlhfkit.graders.base import FORMULA_MATH, Grader, GradingError, Item, Sample, Score
from rlhfkit.graders.fields import Fields
from rlhfkit.graders.formula import Formula, FormulaMathError, parse_formula

KEYS = ("graders", "calculate_output")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MultiGrader(Grader):
    """Combine sub-graders with a formula.

    Args:
        name: the grader's name.
        graders: sub-grader by the name the formula uses.
        formula: the parsed `calculate_output`.
    """

    type = "multi"

    def __init__(self, name: str, graders: dict[str, Grader], formula: Formula):
        super().__init__(name)
        self.graders = graders
        self.formula = formula

    def score_batch(self, samples: Sequence[Sample], items: Sequence[Item]) -> list[Score]:
        parts = {key: grader.score_batch(samples, items) for key, grader in self.graders.items()}
        scores = []
        for i in range(len(samples)):
            sub_rewards = {key: part[i].reward for key, part in parts.items()}
            errors = [error for part in parts.values() for error in part[i].errors]
            if errors:
                scores.append(Score(0.0, errors, sub_rewards))
                continue
            try:
                scores.append(Score(self.formula.evaluate(sub_rewards), [], sub_rewards))
            except FormulaMathError as exc:
                error = GradingError(FORMULA_MATH, f"calculate_output: {exc}")
                scores.append(Score(0.0, [self.error_entry(error)], sub_rewards))
        return scores

    def close(self) -> None:
        for grader in self.graders.values():
            grader.close()


def build(fields: Fields, name: str) -> MultiGrader | None:
    """A MultiGrader from its mapping; sub-graders are named by their keys by default."""
    value = fields.get("graders")
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        fields.problem("graders", "must be a mapping of name: grader, with at least one grader")
        return None
    graders: dict[str, Grader] = {}
    for key, config in value.items():
        at = fields.where(f"graders.{key}")
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            fields.ctx.problem(
                at,
                "a sub-grader name must be a letter or _ followed by letters, digits or _ "
                "(the formula refers to it by this name)",
            )
            continue
        grader = fields.ctx.build(config, at, default_name=key)
        if grader is not None:
            graders[key] = grader
    source = fields.text("calculate_output")
    if source is None:
        return None
    try:
        formula = parse_formula(source, {k for k in value if isinstance(k, str)})
    except ValueError as exc:
        fields.problem("calculate_output", str(exc))
        return None
    if len(graders) != len(value):
        return None
    return MultiGrader(name, graders, formula)
