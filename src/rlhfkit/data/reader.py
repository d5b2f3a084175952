"""Read raw JSON rows, each with the file and line it came from.

A dataset path is a `.jsonl`, `.jsonl.gz` or `.json` file (a JSON list of objects), a
folder (every such file inside it, sorted by name) or a glob pattern (its sorted matches).
`scan_rows` reads everything it can and collects every problem (undecodable bytes, invalid
JSON, a row that is not an object) instead of stopping at the first; `read_rows` raises
them together as one `DatasetError`. A path that names nothing readable is a
`DatasetError` at once.

Limits of one row: at most `MAX_ROW_BYTES` (16 MiB) of JSON, nested at most as deep as
Python's JSON reader goes (about 1,000 levels), and text only: a lone surrogate escape
(`"\\ud800"` without its pair) is not a character and is refused with its row.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.records import Source
from rlhfkit.errors import DatasetError

SUFFIXES = (".jsonl", ".jsonl.gz", ".json")
_BOM = "\ufeff"
MAX_ROW_BYTES = 16 * 1024 * 1024
"""The largest row read (a row of several MB is already far beyond any sequence length)."""
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_GLOB_CHARS = ("*", "?", "[")


@dataclass
class RowScan:
    """What `scan_rows` found.

    Attributes:
        files: the files read, in order, as strings (these are the `Source.file` values).
        rows: (source, row) for every row that is a JSON object, in file then line order.
        issues: (source, message) for every problem; each message starts with `file:line`.
            A problem with a whole file (it cannot be read) has line 0 and starts with `file`.
    """

    files: list[str] = field(default_factory=list)
    rows: list[tuple[Source, dict[str, Any]]] = field(default_factory=list)
    issues: list[tuple[Source, str]] = field(default_factory=list)
    content: Any = field(default_factory=hashlib.sha256)
    """sha256 of the bytes read, file after file (each with its length): what the rows are,
    whatever the files are called."""
    unreadable: set[str] = field(default_factory=set)
    """Files whose rows could not all be read: a part of the file is lost, not just a row
    (cannot be read, not UTF-8 or not a list in a .json file, a .json list broken midway)."""

    @property
    def problems(self) -> list[str]:
        """Every problem message, in file then line order."""
        return [message for _, message in sort_issues(self.issues, self.files)]

    @property
    def bad_rows(self) -> int:
        """How many rows (or unreadable files) have problems."""
        return len({source for source, _ in self.issues})


def sort_issues(issues: list[tuple[Source, str]], files: list[str]) -> list[tuple[Source, str]]:
    """Issues in file order (as in `files`), then line order; stable for one line."""
    order = {name: index for index, name in enumerate(files)}
    return sorted(issues, key=lambda issue: (order.get(issue[0].file, -1), issue[0].line))


def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def not_an_object(source: Source, value: Any) -> str:
    """The problem message for a row that is not a JSON object."""
    return (
        f"{source}: the row is a JSON {json_type_name(value)}; every row must be an object "
        '({"key": value, ...})'
    )


def find_files(path: str | Path) -> list[Path]:
    """The dataset files a path names.

    Args:
        path: a `.jsonl`, `.jsonl.gz` or `.json` file, a folder (its files with those
            suffixes, sorted by name, hidden files skipped, not recursive) or a glob pattern
            (its matches, sorted; `**` matches folders recursively).

    Returns:
        The files, each spelled as given (a folder's files are `folder/name`).

    Raises:
        DatasetError: the path does not exist, a file has an unsupported suffix, or a folder
            or pattern holds no dataset file.
    """
    text = str(path)
    path = Path(path)
    if not path.exists() and any(c in text for c in _GLOB_CHARS):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise DatasetError(
                f"no files match the pattern {text!r}; check the pattern, and quote it on the "
                "command line so the shell passes it to rlhfkit unexpanded"
            )
        return [file for match in matches for file in _files_at(Path(match))]
    if not path.exists():
        raise DatasetError(
            f"dataset path {text} does not exist (relative paths start at {Path.cwd()}); "
            "check the spelling or pass the full path"
        )
    return _files_at(path)


def _files_at(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.endswith(SUFFIXES)
        )
        if not files:
            raise DatasetError(
                f"folder {path} holds no .jsonl, .jsonl.gz or .json file; put the dataset "
                "files there or pass the path of a file"
            )
        return files
    if not path.name.endswith(SUFFIXES):
        raise DatasetError(
            f"{path} has an unsupported file type; rlhfkit reads .jsonl (one JSON object per "
            "line), .jsonl.gz and .json (a list of objects): convert the file or rename it "
            "if it already is one of these"
        )
    return [path]


def scan_rows(path: str | Path) -> RowScan:
    """Read every row of a dataset path, collecting problems instead of raising them.

    Args:
        path: see `find_files`.

    Returns:
        The files, the object rows with their sources (1-based line of the row's first
        character) and every problem found.

    Raises:
        DatasetError: the path names no readable dataset file (see `find_files`).
    """
    scan = RowScan()
    for file in find_files(path):
        name = str(file)
        scan.files.append(name)
        data = _read_bytes(file, scan)
        if data is None:
            continue
        scan.content.update(f"{len(data)}\0".encode())
        scan.content.update(data)
        if name.endswith(".json"):
            values = _json_list_values(data, name, scan)
        else:
            values = _jsonl_values(data, name, scan)
        for source, value in values:
            if isinstance(value, dict):
                scan.rows.append((source, value))
            else:
                scan.issues.append((source, not_an_object(source, value)))
    return scan


def read_rows(path: str | Path) -> list[tuple[Source, dict[str, Any]]]:
    """Read every row of a dataset path.

    Args:
        path: see `find_files`.

    Returns:
        (source, row) for every row, in file then line order.

    Raises:
        DatasetError: the path names no readable file, or some rows could not be read; the
            error lists every problem with its `file:line`.
    """
    scan = scan_rows(path)
    if scan.problems:
        raise DatasetError(
            f"dataset {path}: {scan.bad_rows} bad row(s) cannot be read; fix or remove these rows",
            scan.problems,
        )
    return scan.rows


def _read_bytes(file: Path, scan: RowScan) -> bytes | None:
    try:
        if file.name.endswith(".gz"):
            with gzip.open(file, "rb") as fh:
                return fh.read()
        return file.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        message = f"{file}: cannot be read ({exc}); check the file is complete"
        scan.issues.append((Source(str(file), 0), message))
        scan.unreadable.add(str(file))
        return None


def _jsonl_values(data: bytes, name: str, scan: RowScan) -> list[tuple[Source, Any]]:
    values = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        source = Source(name, number)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            scan.issues.append((source, _undecodable(source, raw, exc)))
            continue
        if number == 1:
            line = line.removeprefix(_BOM)
            if not line.strip():
                continue
        if len(raw) > MAX_ROW_BYTES:
            scan.issues.append((source, _too_large(source, len(raw))))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            scan.issues.append((source, f"{source}: invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        except RecursionError:
            scan.issues.append((source, _too_deep(source)))
            continue
        problem = _not_text(source, value, line)
        if problem:
            scan.issues.append((source, problem))
            continue
        values.append((source, value))
    return values


def _too_large(source: Source, size: int) -> str:
    return (
        f"{source}: the row is {size / 2**20:.1f} MiB; rows are read up to "
        f"{MAX_ROW_BYTES / 2**20:.1f} MiB: shorten or remove it"
    )


def _too_deep(source: Source) -> str:
    return f"{source}: the row is nested too deeply to read (about 1,000 levels at most)"


def _not_text(source: Source, value: Any, text: str) -> str | None:
    """A problem when a string of `value` holds a lone surrogate (checked only where `text`
    has a surrogate escape, so ordinary rows cost nothing)."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                code = ord(item[exc.start])
                return (
                    f"{source}: a string holds a lone surrogate (\\u{code:04x}), which is not "
                    "text; fix its escape sequence (a pair like \\ud83d\\ude00 is fine)"
                )
    return None


def _undecodable(source: Source, raw: bytes, exc: UnicodeDecodeError) -> str:
    return (
        f"{source}: not valid UTF-8 at byte {exc.start} of the line "
        f"(0x{raw[exc.start]:02x}); save the file as UTF-8"
    )


def _decoded(data: bytes, name: str, scan: RowScan) -> str | None:
    """The file's text without a byte-order mark, or None after recording every line that
    is not UTF-8 (the file is then unreadable)."""
    try:
        return data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError:
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                source = Source(name, number)
                scan.issues.append((source, _undecodable(source, raw, exc)))
        scan.unreadable.add(name)
        return None


def _json_list_values(data: bytes, name: str, scan: RowScan) -> list[tuple[Source, Any]]:
    """The elements of a `.json` list, each with the line where it starts."""
    text = _decoded(data, name, scan)
    if text is None:
        return []
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        scan.issues.append(_not_a_list(text, pos, name))
        scan.unreadable.add(name)
        return []
    decoder = json.JSONDecoder()
    values: list[tuple[Source, Any]] = []
    line, counted = 1, 0
    pos = _skip_space(text, pos + 1)
    closed = text.startswith("]", pos)
    while not closed:
        line += text.count("\n", counted, pos)
        counted = pos
        source = Source(name, line)
        try:
            value, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            where, message = (
                _invalid_json(name, exc)
                if isinstance(exc, json.JSONDecodeError)
                else (source, _too_deep(source))
            )
            scan.issues.append((where, f"{message}; the rest of the list was not read"))
            scan.unreadable.add(name)
            return values
        problem = (
            _too_large(source, end - pos)
            if end - pos > MAX_ROW_BYTES
            else _not_text(source, value, text[pos:end])
        )
        if problem:
            scan.issues.append((source, problem))
        else:
            values.append((source, value))
        pos = _skip_space(text, end)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif text.startswith("]", pos):
            closed = True
        else:
            where = Source(name, 1 + text.count("\n", 0, pos))
            scan.issues.append((where, f"{where}: invalid JSON: expected ',' or ']'"))
            scan.unreadable.add(name)
            return values
    pos = _skip_space(text, pos + 1)
    if pos < len(text):
        where = Source(name, 1 + text.count("\n", 0, pos))
        scan.issues.append((where, f"{where}: invalid JSON: extra data after the closing ']'"))
    return values


def _invalid_json(name: str, exc: json.JSONDecodeError) -> tuple[Source, str]:
    where = Source(name, exc.lineno)
    return where, f"{where}: invalid JSON: {exc.msg} at column {exc.colno}"


def _not_a_list(text: str, pos: int, name: str) -> tuple[Source, str]:
    if pos == len(text):
        found = "the file is empty"
    else:
        try:
            value, _ = json.JSONDecoder().raw_decode(text, pos)
            found = f"found a JSON {json_type_name(value)}"
        except json.JSONDecodeError as exc:
            return _invalid_json(name, exc)
    where = Source(name, 1 + text.count("\n", 0, pos))
    message = (
        f"{where}: a .json dataset must be a list of objects ([{{...}}, {{...}}]) but {found}; "
        "for one object per line name the file .jsonl"
    )
    return where, message


def _skip_space(text: str, pos: int) -> int:
    match = _JSON_WHITESPACE.match(text, pos)
    return match.end() if match else pos
