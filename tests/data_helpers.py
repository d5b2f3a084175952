"""Small helpers shared by the data tests: write fixture files, catch dataset errors."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rlhfkit.errors import DatasetError


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line (gzip when the name ends in .gz); returns the path."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(call: Callable[..., Any], *args: Any, **kwargs: Any) -> DatasetError:
    """Call and return the DatasetError it raises (the test fails when none is raised)."""
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    return info.value
