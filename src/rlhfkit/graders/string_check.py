"""`string_check`: compare two rendered templates; reward 1.0 when the check holds, else 0.0."""

from __future__ import annotations

from collections.abc import Callable

from rlhfkit.graders.base import Item, PerSampleGrader, Sample
from rlhfkit.graders.fields import Fields
from rlhfkit.graders.templates import Template

OPERATIONS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda value, reference: value == reference,
    "ne": lambda value, reference: value != reference,
    "like": lambda value, reference: reference in value,
    "ilike": lambda value, reference: reference.casefold() in value.casefold(),
}
"""`like` and `ilike`: the reference is a substring of the input (ilike ignores case)."""

KEYS = ("input", "reference", "operation")


class StringCheckGrader(PerSampleGrader):
    """1.0 when `operation(input, reference)` holds.

    Args:
        name: the grader's name.
        input: template of the text checked, usually `{{sample.output_text}}`.
        reference: template of the text it is compared with.
        operation: `eq`, `ne`, `like` (reference is a substring, case-sensitive) or
            `ilike` (substring, case-insensitive).
    """

    type = "string_check"

    def __init__(self, name: str, input: Template, reference: Template, operation: str):
        super().__init__(name)
        self.input = input
        self.reference = reference
        self.operation = operation
        self._check = OPERATIONS[operation]

    def score_one(self, sample: Sample, item: Item) -> float:
        value = self.input.render(sample, item)
        reference = self.reference.render(sample, item)
        return 1.0 if self._check(value, reference) else 0.0


def build(fields: Fields, name: str) -> StringCheckGrader | None:
    """A StringCheckGrader from its mapping (None after a recorded problem)."""
    parts = (
        fields.template("input"),
        fields.template("reference"),
        fields.choice("operation", tuple(OPERATIONS)),
    )
    if None in parts:
        return None
    return StringCheckGrader(name, *parts)
