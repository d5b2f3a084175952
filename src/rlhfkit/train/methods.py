"""The RL methods in one table: each method's config, trainer and parameter names.

PPO keeps Vertex AI's parameter names (`reinforcement_learning_train_steps`,
`reinforcement_learning_rate_multiplier`, `eval_dataset`); GRPO and RLOO keep OpenAI's
(`train_steps`, `learning_rate_multiplier`, `valid_dataset`). `rlhfkit run` speaks Vertex
AI's names and translates them here, for every method, with `Method.translate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rlhfkit.config import build_config, parse_overrides, read_yaml
from rlhfkit.errors import ConfigError
from rlhfkit.rollout.scorers import RewardFn
from rlhfkit.train import METHODS
from rlhfkit.train.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.train.openai_job import from_openai_job, is_openai_job
from rlhfkit.train.ppo import PPOTrainer, RLConfig
from rlhfkit.train.rl import RLResult, RLTrainer
from rlhfkit.train.rl_config import RLCommonConfig

logger = logging.getLogger(__name__)

OPENAI_NAMES = {
    "reinforcement_learning_train_steps": "train_steps",
    "reinforcement_learning_rate_multiplier": "learning_rate_multiplier",
    "eval_dataset": "valid_dataset",
}
"""The pipeline's (Vertex AI's) name -> the name GRPO and RLOO take (OpenAI's)."""


@dataclass(frozen=True)
class Method:
    """One RL method: what configures it, what trains it, what it calls things."""

    name: str
    config: type[RLCommonConfig]
    trainer: type[RLTrainer]
    names: dict[str, str]
    """The pipeline's parameter name -> this method's, where they differ."""

    @property
    def eval_metric(self) -> str:
        """The held-out metric its best checkpoints are chosen by."""
        return self.trainer.eval_metric

    @property
    def kl_coeff(self) -> float:
        """Its default KL weight (the same from `rlhfkit run` and `rlhfkit train-rl`)."""
        return next(f.default for f in fields(self.config) if f.name == "kl_coeff")

    def translate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Pipeline parameter names -> this method's."""
        return {self.names.get(name, name): value for name, value in values.items()}


METHOD_TABLE = {
    "ppo": Method("ppo", RLConfig, PPOTrainer, {}),
    "grpo": Method("grpo", GRPOConfig, GRPOTrainer, OPENAI_NAMES),
    "rloo": Method("rloo", GRPOConfig, GRPOTrainer, OPENAI_NAMES),
}
assert tuple(METHOD_TABLE) == METHODS


def method(name: str) -> Method:
    """The method called `name`; an unknown name is a ConfigError listing the others."""
    if name not in METHOD_TABLE:
        raise ConfigError(f"method={name!r} is not an RL method; choose one of {METHODS}")
    return METHOD_TABLE[name]


def train_rl(config: RLCommonConfig, reward_fn: RewardFn | None = None) -> RLResult:
    """Tune a policy with PPO (`RLConfig`) or GRPO / RLOO (`GRPOConfig`).

    The reward is `config.reward_model` (a train-reward folder), `config.grader` (a grader
    file), or `reward_fn` when given (any Python scoring function, e.g. a rule with a known
    optimum).
    """
    return method(config.method).trainer(config, reward_fn).run()


def load_rl_config(
    path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None
) -> RLCommonConfig:
    """`RLConfig` for method=ppo (the default), `GRPOConfig` for grpo and rloo: defaults <
    YAML file < overrides. The file may be an OpenAI reinforcement fine-tuning job body
    (`rlhfkit.train.openai_job`)."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values = read_yaml(path) if path else {}
    job = is_openai_job(values)  # an OpenAI reinforcement fine-tuning job body, unchanged
    if job:
        values, auto, ignored = from_openai_job(values)
    values = {**values, **(overrides or {})}
    cls = method(str(values.get("method", "ppo"))).config
    config = build_config(cls, values, source=str(path) if path else "overrides")
    if job and ignored:
        logger.warning("%s: accepted but not used here: %s", path, "; ".join(ignored))
    if job and auto:
        resolved = ", ".join(f"{key}={getattr(config, key)}" for key in auto)
        logger.info("%s: hyperparameters set to auto take rlhfkit's defaults: %s", path, resolved)
    return config
