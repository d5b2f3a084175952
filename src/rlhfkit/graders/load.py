"""`load_grader`: read and check a grader file (YAML or JSON, OpenAI's grader shape).

Every problem in the file is collected and raised together in one ConfigError naming the
file, the key path (`graders.length.operation`) and what is allowed. Loading builds the
graders but starts no worker and loads no model; that happens on the first grade. (A
python grader runs bubblewrap once per process to check that the sandbox works.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from rlhfkit.errors import ConfigError
from rlhfkit.graders import multi, python_grader, score_model, string_check, text_similarity
from rlhfkit.graders.base import Grader
from rlhfkit.graders.fields import Fields, LoadContext
from rlhfkit.graders.sandbox import resolve_mode

GRADER_TYPES: dict[str, ModuleType] = {
    "string_check": string_check,
    "text_similarity": text_similarity,
    "python": python_grader,
    "score_model": score_model,
    "multi": multi,
}
"""Grader type -> its module (each has KEYS and build(fields, name))."""

logger = logging.getLogger(__name__)


def load_grader(
    source: str | Path | Mapping[str, Any],
    base_dir: str | Path | None = None,
    sandbox: str | None = None,
) -> Grader:
    """A grader from a YAML/JSON file or a mapping, checked as a whole.

    A file may hold the grader itself or `{grader: {...}}` (the body of OpenAI's grader
    run and validate requests). `name` is optional: the top-level grader defaults to the
    file's name without extension (the type for a mapping), a sub-grader to its key.

    Args:
        source: path of a .yaml, .yml or .json file, or the grader mapping.
        base_dir: where relative paths in the grader start (`source_file`, model folders);
            default: the file's folder, or the working directory for a mapping.
        sandbox: how python graders are contained: auto (the sandbox when it works here,
            else a warning), required or off; default: $RLHFKIT_GRADER_SANDBOX, else auto.

    Raises:
        ConfigError: listing every problem found; or a python grader under
            `sandbox=required` where the sandbox cannot run.
    """
    mode = resolve_mode(sandbox)
    if isinstance(source, Mapping):
        where, config, default_name = "grader", source, None
        own = Path(base_dir).resolve() if base_dir is not None else None
        folder = own or Path.cwd()
    else:
        path = Path(source)
        where, config, default_name = str(path), _read(path), path.stem
        folder = own = Path(base_dir if base_dir is not None else path.parent).resolve()
    if isinstance(config, Mapping) and set(config) == {"grader"}:
        config = config["grader"]
    # multi graders build their sub-graders through ctx.build, into the same problem list
    ctx = LoadContext(
        base_dir=folder,
        build=lambda *args, **kwargs: _build(ctx, *args, **kwargs),
        folder=own,
        sandbox=mode,
    )
    if isinstance(config, Mapping) and default_name is None:
        default_name = str(config.get("type"))
    grader = _build(ctx, config, "", default_name)
    if ctx.problems or grader is None:
        count = len(ctx.problems)
        raise ConfigError(
            f"{where}: invalid grader ({count} problem{'s' if count != 1 else ''}):\n  - "
            + "\n  - ".join(ctx.problems)
        )
    if ctx.ignored:
        logger.warning("%s: accepted but not used here: %s", where, "; ".join(ctx.ignored))
    return grader


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"grader file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read grader file {path}: {exc}") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc}") from None


def _build(
    ctx: LoadContext, config: Any, at: str, default_name: str | None = None
) -> Grader | None:
    """One grader (recursively for multi) or None after recording its problems."""
    if not isinstance(config, Mapping):
        ctx.problem(at, f"a grader must be a mapping with a type, got {type(config).__name__}")
        return None
    kind = config.get("type")
    module = GRADER_TYPES.get(kind) if isinstance(kind, str) else None
    if module is None:
        found = "missing" if kind is None else f"{kind!r} is not a grader type"
        ctx.problem(_join(at, "type"), f"{found}; types: {', '.join(GRADER_TYPES)}")
        return None
    fields = Fields(ctx, config, at, ("type", "name", *module.KEYS), f"a {kind} grader")
    name = fields.text("name", default_name)
    if name is not None and not name.strip():
        fields.problem("name", "must not be empty")
        name = None
    grader = module.build(fields, name or "")
    return grader if name is not None else None


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key
