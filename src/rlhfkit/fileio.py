"""Atomic file writes: a kill at any moment leaves either the old file or the new one."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    Works for files and for folders. On an exception the temporary is removed and `path`
    is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and target.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines atomically (gzip when the name ends in .gz); return the count."""
    import gzip

    count = 0
    with atomic_path(path) as tmp:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    return count


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Journal:
    """The finished pieces of a long job, appended (and synced) as they finish, so that a
    job killed at any moment continues where it stopped.

    The file's first line holds the job's fingerprint (a hash of everything its results
    depend on); then one JSON object per finished piece, `{"index": i, ...}`. A journal
    with another fingerprint is from other settings and is started again; a line torn by
    a kill is dropped (its piece is done again). The file appears with the first finished
    piece, so a job that fails before any leaves nothing behind.
    """

    def __init__(self, path: str | Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._started = False

    def open(self) -> dict[int, dict[str, Any]]:
        """The pieces already finished with this fingerprint, by index."""
        done = self._read()
        self._started = bool(done)
        return done

    def append(self, pieces: Iterable[tuple[int, dict[str, Any]]]) -> None:
        if not self._started:  # a new journal, or one of other settings: replace it
            header = json.dumps({"fingerprint": self.fingerprint}) + "\n"
            atomic_write_text(self.path, header)
            self._started = True
        with open(self.path, "a", encoding="utf-8") as fh:
            for index, payload in pieces:
                fh.write(json.dumps({"index": index, **payload}, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict[int, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if not text.endswith("\n"):
            lines = lines[:-1]
        try:
            if json.loads(lines[0]).get("fingerprint") != self.fingerprint:
                logging.getLogger(__name__).info(
                    "%s was written with other settings; starting again", self.path
                )
                return {}
            rows = [json.loads(line) for line in lines[1:]]
        except (IndexError, ValueError, AttributeError):
            return {}
        if not text.endswith("\n"):
            atomic_write_text(self.path, "".join(f"{line}\n" for line in lines))
        return {row.pop("index"): row for row in rows}


def check_output_path(path: str | Path, folder: bool = False) -> Path:
    """Fail now, before any work, if `path` cannot be written: an output file must not be a
    folder, an output folder not a file, and the nearest folder that exists on the way must
    take a new file. Raises the OSError a later write would (the command line makes it one
    line). Leaves nothing behind: no folder is made, the probe file is removed."""
    path = Path(path)
    if folder and path.is_file():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    if not folder and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    where = path if folder else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(where))
    try:
        fd, probe = tempfile.mkstemp(prefix=".rlhfkit-write-check.", dir=where)
    except OSError as exc:  # named by the path the user gave, not the probe's
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    os.unlink(probe)
    return path


def file_error(exc: OSError) -> str:
    """One line for a file-system error: what went wrong, on which path, what to do."""
    path = exc.filename if exc.filename is not None else "a file"
    advice = {
        errno.ENOENT: "check the path; its folder must exist",
        errno.EEXIST: "it is in the way (a folder must go there); remove it or choose another path",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
        errno.EISDIR: "it is a folder; give a file path",
        errno.EACCES: "choose a path you may write to, or change its permissions",
        errno.EPERM: "choose a path you may write to, or change its permissions",
        errno.EROFS: "the file system is read-only; choose another path",
        errno.ENOSPC: "the disk is full; free space or choose another disk",
    }.get(exc.errno, "check the path")
    reason = exc.strerror or str(exc)
    return f"{path}: {reason.rstrip('.').lower()}; {advice}"


def write_config(run_dir: Path, values: dict[str, Any]) -> None:
    """The resolved config as config.json and config.yaml in the run directory."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", values)
    text = yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
    atomic_write_text(run_dir / "config.yaml", text)
