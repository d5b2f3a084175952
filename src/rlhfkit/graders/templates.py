"""Templates: text with `{{item.FIELD}}` and `{{sample.output_text}}` placeholders.

Placeholders:
- `{{item.FIELD}}`, `{{item.a.b}}`: a field of the dataset row (nested mappings; a number
  segment indexes a list, `{{item.choices.0}}`).
- `{{sample.output_text}}`: the sampled answer.
- `{{sample.output_json}}`, `{{sample.output_json.KEY}}`: the answer parsed as JSON.

Strings are inserted as they are; numbers, booleans, lists and mappings as JSON. Syntax
(an unclosed `{{`, an unknown root, a malformed path) is checked when the grader is
loaded; a missing item field or an answer that is not JSON is a recorded error at run
time. A `}}` outside a placeholder is plain text, so JSON examples in prompts are fine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlhfkit.graders.base import INVALID_VARIABLE, GradingError, Item, Sample

_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+")
_SAMPLE_FIELDS = ("output_text", "output_json")
HELP = "use {{item.FIELD}}, {{sample.output_text}} or {{sample.output_json.KEY}}"


@dataclass(frozen=True)
class Placeholder:
    """One `{{root.a.b}}` reference: root `item` or `sample`, then the path below it."""

    root: str
    path: tuple[str, ...]

    @property
    def text(self) -> str:
        return "{{" + ".".join((self.root, *self.path)) + "}}"


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and placeholders, in order."""

    source: str
    parts: tuple[str | Placeholder, ...]

    def render(self, sample: Sample, item: Item) -> str:
        """Fill in the placeholders; GradingError when a field is missing or not JSON."""
        return "".join(
            part if isinstance(part, str) else _format(_resolve(part, sample, item))
            for part in self.parts
        )


def parse_template(text: str) -> Template:
    """Parse a template; ValueError naming the column of the first syntax problem."""
    parts: list[str | Placeholder] = []
    position = 0
    while True:
        start = text.find("{{", position)
        if start < 0:
            parts.append(text[position:])
            break
        parts.append(text[position:start])
        end = text.find("}}", start + 2)
        if end < 0:
            raise ValueError(f"unclosed '{{{{' at column {start + 1}; close it with '}}}}'")
        parts.append(_parse_placeholder(text[start + 2 : end].strip(), start + 1))
        position = end + 2
    return Template(text, tuple(p for p in parts if p != ""))


def _parse_placeholder(body: str, column: int) -> Placeholder:
    segments = body.split(".")
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ValueError(f"malformed placeholder '{{{{{body}}}}}' at column {column}; {HELP}")
    root, *path = segments
    if root == "item":
        if not path:
            raise ValueError(f"'{{{{item}}}}' at column {column} needs a field: {{{{item.FIELD}}}}")
    elif root == "sample":
        if not path or path[0] not in _SAMPLE_FIELDS or (path[0] == "output_text" and path[1:]):
            raise ValueError(f"unknown sample field '{{{{{body}}}}}' at column {column}; {HELP}")
    else:
        raise ValueError(
            f"unknown variable '{root}' in '{{{{{body}}}}}' at column {column}; {HELP}"
        )
    return Placeholder(root, tuple(path))


def _resolve(placeholder: Placeholder, sample: Sample, item: Item) -> Any:
    if placeholder.root == "sample":
        if placeholder.path[0] == "output_text":
            return sample.output_text
        value, path, where = sample.output_json, placeholder.path[1:], "sample.output_json"
    else:
        value, path, where = item, placeholder.path, "item"
    for segment in path:
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            fields = ", ".join(map(str, list(value)[:20])) if isinstance(value, Mapping) else ""
            raise GradingError(
                INVALID_VARIABLE,
                f"{placeholder.text}: {where} has no field {segment!r}"
                + (f" (it has: {fields})" if fields else ""),
            )
        where = f"{where}.{segment}"
    return value


def _format(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
