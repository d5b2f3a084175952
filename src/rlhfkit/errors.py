"""Errors that reach the user as a readable message (exit status 2), never as a traceback."""

from __future__ import annotations


class RlhfkitError(Exception):
    """A user-facing problem: bad input, bad config, a missing file or model.

    The message says what is wrong, where, and how to fix it. The CLI prints it and exits
    with status 2.
    """

    exit_code = 2


class ConfigError(RlhfkitError):
    """A configuration value is invalid (names the field, the value and what is allowed)."""


class ModelLoadError(RlhfkitError):
    """A model reference could not be resolved or loaded."""


class DatasetError(RlhfkitError):
    """A dataset file or row is invalid. Carries every problem found, not just the first."""

    max_listed = 20

    def __init__(self, summary: str, problems: list[str] | None = None):
        self.summary = summary
        self.problems = list(problems or [])
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [self.summary]
        for problem in self.problems[: self.max_listed]:
            lines.append(f"  - {problem}")
        hidden = len(self.problems) - self.max_listed
        if hidden > 0:
            lines.append(f"  ... and {hidden} more problem(s)")
        return "\n".join(lines)
