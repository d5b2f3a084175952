"""Reading a grader mapping field by field, recording every problem instead of stopping.

A problem names the key path (`graders.length.operation`), the value and what is
allowed; `load_grader` raises them all at once in one ConfigError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.graders.templates import Template, parse_template

_MISSING = object()


@dataclass
class LoadContext:
    """State shared while one grader file is read.

    Attributes:
        base_dir: relative paths in the file (source_file, model folders) start here.
        build: builds a (sub-)grader from a mapping at a key path; set by `load_grader`.
        folder: the grader file's folder, or the base_dir given with a mapping; None for a
            mapping without one (python graders may read this folder).
        sandbox: how python graders are contained: auto, required or off (`sandbox.MODES`).
        problems: every problem found, as `key.path: message`.
        ignored: OpenAI fields accepted without a local use, as `key.path (why)`.
    """

    base_dir: Path
    build: Callable[..., Any]
    folder: Path | None = None
    sandbox: str = "auto"
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def problem(self, at: str, message: str) -> None:
        self.problems.append(f"{at}: {message}" if at else message)

    def path(self, value: str) -> Path:
        """A path from the grader file, relative ones taken from `base_dir`."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path


class Fields:
    """Typed access to one mapping of a grader file; each reader returns None after a problem.

    Args:
        ctx: where problems are recorded.
        config: the mapping.
        at: its key path (empty at the top level).
        keys: the keys it may have; any other is a problem.
        kind: what the mapping is, for messages (`a string_check grader`).
    """

    def __init__(
        self,
        ctx: LoadContext,
        config: Mapping[str, Any],
        at: str,
        keys: tuple[str, ...],
        kind: str,
    ):
        self.ctx = ctx
        self.config = config
        self.at = at
        for key in config:
            if key not in keys:
                self.problem(str(key), f"unknown key for {kind}; keys: {', '.join(keys)}")

    def where(self, key: str) -> str:
        return f"{self.at}.{key}" if self.at else key

    def ignored(self, key: str, why: str) -> None:
        """`key`, when present, is accepted (a field of OpenAI's schema) and not used: `why`."""
        if key in self.config:
            self.ctx.ignored.append(f"{self.where(key)} ({why})")

    def problem(self, key: str, message: str) -> None:
        self.ctx.problem(self.where(key), message)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The raw value; a problem (and None) when a required key is missing."""
        if key in self.config:
            return self.config[key]
        if default is _MISSING:
            self.problem(key, "missing (required)")
            return None
        return default

    def text(self, key: str, default: Any = _MISSING) -> str | None:
        value = self.get(key, default)
        if value is None or isinstance(value, str):
            return value
        self.problem(key, f"must be a string, got {type(value).__name__} {value!r}")
        return None

    def template(self, key: str, default: Any = _MISSING) -> Template | None:
        value = self.text(key, default)
        return None if value is None else self.parse_template(key, value)

    def parse_template(self, key: str, value: str) -> Template | None:
        try:
            return parse_template(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        if value not in choices:
            self.problem(key, f"{value!r} is not allowed; choose one of: {', '.join(choices)}")
            return None
        return value

    def number(
        self,
        key: str,
        default: float,
        above: float | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
        integer: bool = False,
    ) -> float | None:
        """A number (an int when `integer`) within the bounds given."""
        value = self.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            kind = "an integer" if integer else "a number"
            self.problem(key, f"must be {kind}, got {value!r}")
            return None
        for bad, bound in (
            (above is not None and value <= above, f"greater than {above}"),
            (at_least is not None and value < at_least, f"at least {at_least}"),
            (at_most is not None and value > at_most, f"at most {at_most}"),
        ):
            if bad:
                self.problem(key, f"must be {bound}, got {value!r}")
                return None
        return value

    def span(self, key: str) -> tuple[float, float] | None:
        """An optional `[lo, hi]` pair with lo < hi."""
        value = self.get(key, None)
        if value is None:
            return None
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and math.isfinite(value[0])
            and math.isfinite(value[1])
            and value[0] < value[1]
        )
        if not ok:
            self.problem(key, f"must be [lo, hi] with two numbers, lo < hi; got {value!r}")
            return None
        return float(value[0]), float(value[1])
