"""An OpenAI reinforcement fine-tuning job body as a `train-rl` config.

`rlhfkit train-rl --config job.json` takes the JSON body of OpenAI's
`POST /v1/fine_tuning/jobs` for a reinforcement job unchanged:

    {"model": ..., "training_file": ..., "validation_file": ...,
     "method": {"type": "reinforcement",
                "reinforcement": {"grader": {...}, "hyperparameters": {...}}}}

and runs it as `method=grpo` (OpenAI's names are GRPO's here): `training_file` is
`prompt_dataset`, `validation_file` `valid_dataset` (local paths), the grader the reward,
the hyperparameters (`n_epochs`, `batch_size`, `learning_rate_multiplier`,
`compute_multiplier`, `eval_interval`, `eval_samples`) GRPO's own; `"auto"` leaves
rlhfkit's default, which the run prints. What has no local meaning is named in one line.
"""

from __future__ import annotations

from typing import Any

from rlhfkit.errors import ConfigError

HYPERPARAMETERS = (
    "n_epochs",
    "batch_size",
    "learning_rate_multiplier",
    "compute_multiplier",
    "eval_interval",
    "eval_samples",
)
"""OpenAI's reinforcement hyperparameters that GRPO takes under the same name."""
IGNORED_HYPERPARAMETERS = {
    "reasoning_effort": "the policy does not reason",
}
IGNORED_KEYS = {
    "model": "OpenAI's model; the policy here is large_model_reference",
    "suffix": "output_dir names the run",
    "metadata": "kept by OpenAI's service only",
    "integrations": "metrics go to metrics.jsonl and TensorBoard under output_dir",
}
FILES = {"training_file": "prompt_dataset", "validation_file": "valid_dataset"}


def is_openai_job(values: dict[str, Any]) -> bool:
    """Whether a config mapping is an OpenAI fine-tuning job body."""
    return isinstance(values.get("method"), dict) or "training_file" in values


def from_openai_job(values: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(train-rl parameters, the `"auto"` hyperparameters, one line per ignored field) of a
    job body; its other keys (rlhfkit parameters such as output_dir) pass through."""
    body = dict(values)
    spec = body.pop("method", None) or {}
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind != "reinforcement":
        where = "train-dpo" if kind == "dpo" else "train-reward or train-dpo"
        raise ConfigError(
            f"method.type={kind!r}: train-rl runs OpenAI reinforcement jobs "
            f'({{"method": {{"type": "reinforcement", ...}}}}); for {kind!r} use rlhfkit {where}'
        )
    settings = spec.get(kind) or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"method.{kind} must be a mapping with grader and hyperparameters")
    hyper = settings.get("hyperparameters") or {}
    if not isinstance(hyper, dict):
        raise ConfigError(f"method.{kind}.hyperparameters must be a mapping (name: value)")
    out: dict[str, Any] = {"method": "grpo"}
    if "grader" in settings:
        out["grader"] = settings["grader"]
    ignored = [f"{key} ({why})" for key, why in IGNORED_KEYS.items() if key in body]
    for key in IGNORED_KEYS:
        body.pop(key, None)
    for key, name in FILES.items():
        if key in body:
            out[name] = _local_file(key, body.pop(key))
    auto = [key for key, value in hyper.items() if value == "auto"]
    for key, value in hyper.items():
        if key in IGNORED_HYPERPARAMETERS:
            ignored.append(f"hyperparameters.{key} ({IGNORED_HYPERPARAMETERS[key]})")
        elif key not in HYPERPARAMETERS:
            known = ", ".join([*HYPERPARAMETERS, *IGNORED_HYPERPARAMETERS])
            raise ConfigError(
                f"method.reinforcement.hyperparameters.{key} is not an OpenAI reinforcement "
                f"hyperparameter; they are {known}"
            )
        elif value != "auto":
            out[key] = value
    return {**body, **out}, auto, ignored


def _local_file(key: str, value: Any) -> str:
    if isinstance(value, str) and value.startswith("file-"):
        raise ConfigError(
            f"{key}={value!r} is an OpenAI file id; give the path of the JSONL file here "
            f'instead ("{key}": "data/train.jsonl")'
        )
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be the path of a JSONL file, got {value!r}")
    return value
