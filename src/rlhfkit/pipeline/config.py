"""`PipelineConfig`: the parameters of `rlhfkit run` (Vertex AI's names), and its loader."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.config import build_config, check, param, parse_overrides, read_yaml
from rlhfkit.data.config import DataConfig
from rlhfkit.graders.sandbox import resolve_mode, sandbox_param
from rlhfkit.train import METHODS

logger = logging.getLogger(__name__)

STAGES = ("import", "reward_model", "rl", "dpo", "infer", "sxs", "report")
"""The stages in order; a run has rl (method ppo, grpo, rloo) or dpo (method=dpo)."""
TUNING_METHODS = (*METHODS, "dpo")
"""What tunes the policy: an RL method, or DPO on the preference pairs directly."""
RL_REWARDS = ("auto", "reward_model", "grader")


@dataclass
class PipelineConfig(DataConfig):
    """The pipeline (`rlhfkit run`, `rlhfkit.rlhf_pipeline`); names and defaults as in
    Vertex AI's rlhf_pipeline where it has them."""

    preference_dataset: str | None = param(
        None, "Preference pairs for the reward model (any supported preference format)."
    )
    prompt_dataset: str | None = param(None, "Prompts for reinforcement learning.")
    eval_dataset: str | None = param(
        None,
        "Eval prompts for the side by side (default: 10% of prompt_dataset held out); a "
        "preference file also evaluates the reward model (its prompts are then the eval prompts).",
    )
    model_display_name: str | None = param(None, "Name of the tuned model (report title).")
    reward_model_learning_rate_multiplier: float = param(
        1.0, "Multiplies the reward model's base learning rate."
    )
    reinforcement_learning_rate_multiplier: float = param(
        1.0, "Multiplies the RL base learning rate."
    )
    reward_model_train_steps: int = param(
        1000, "Reward-model optimizer steps (0: its head fitted on the base model's features)."
    )
    reinforcement_learning_train_steps: int = param(1000, "Reinforcement-learning steps.")
    kl_coeff: float | None = param(
        None,
        "Weight of the KL penalty to the base model (default: the method's own, as in "
        "train-rl: ppo 0.1, grpo and rloo 0); for dpo it is beta (default 0.1).",
    )
    method: str = param(
        "ppo",
        "How the policy is tuned: ppo, grpo or rloo (RL), or dpo (on the preference pairs "
        "directly, no RL and no reward model unless the side by side needs one as its judge).",
        choices=TUNING_METHODS,
    )
    grader: str | None = param(
        None,
        "Grader file: a side-by-side autorater, and RL's reward where rl_reward picks it.",
    )
    grader_sandbox: str | None = sandbox_param()
    rl_reward: str = param(
        "auto",
        "What RL maximises: reward_model (trained on preference_dataset), grader, or auto "
        "(ppo: the reward model; grpo / rloo: the grader when set, else the reward model).",
        choices=RL_REWARDS,
    )
    autorater: str | None = param(
        None, "Side-by-side autorater (default: the trained reward model); see rlhfkit sxs."
    )
    eval_fraction: float = param(
        0.1, "Share of prompt_dataset held out as eval prompts when eval_dataset is not set."
    )
    reward_model_options: dict = param(
        {}, "More train-reward parameters, e.g. {lora_rank: 8} (CLI: reward_model_options.KEY=V)."
    )
    rl_options: dict = param(
        {},
        "More parameters of the tuning stage (train-rl, or train-dpo for method=dpo), e.g. "
        "{batch_size: 4} (CLI: rl_options.KEY=V).",
    )
    seed: int = param(0, "Seed of every stage.")
    output_dir: str = param("runs/pipeline", "Run directory (layout: docs/pipeline.md).")
    from_stage: str | None = param(
        None, f"Run again from this stage on: {', '.join(STAGES)}.", choices=(None, *STAGES)
    )

    def validate(self) -> None:
        super().validate()
        if self.grader_sandbox is not None:
            resolve_mode(self.grader_sandbox, "grader_sandbox")
        check(
            bool(self.prompt_dataset) or (self.method == "dpo" and bool(self.eval_dataset)),
            "prompt_dataset",
            self.prompt_dataset,
            "is required (method=dpo can do without when eval_dataset gives the eval prompts)",
        )
        check(
            bool(self.preference_dataset) or self._grader_rl,
            "preference_dataset",
            self.preference_dataset,
            "is required (the reward model, or DPO, learns from it); only a grader as RL's "
            "reward (method=grpo or rloo with a grader, or rl_reward=grader) can do without",
        )
        check(0 < self.eval_fraction < 1, "eval_fraction", self.eval_fraction, "in (0, 1)")
        check(
            self.reward_source != "grader" or bool(self.grader),
            "rl_reward",
            self.rl_reward,
            "grader needs a grader file: set grader=PATH, or rl_reward=reward_model",
        )
        check(
            self.reinforcement_learning_train_steps >= 1,
            "reinforcement_learning_train_steps",
            self.reinforcement_learning_train_steps,
            "must be at least 1",
        )
        check(
            self.reward_model_train_steps >= 0,
            "reward_model_train_steps",
            self.reward_model_train_steps,
            "must be >= 0 (0: the reward model's fitted head alone, no training step)",
        )

    @property
    def trains_reward_model(self) -> bool:
        """RL's reward, or, for dpo, the side by side's judge when no other is set."""
        if self.method == "dpo":
            return bool(self.preference_dataset) and not (self.autorater or self.grader)
        return bool(self.preference_dataset)

    @property
    def _grader_rl(self) -> bool:
        return self.method != "dpo" and self.reward_source == "grader"

    @property
    def reward_source(self) -> str:
        """`reward_model` or `grader`: what RL maximises (rl_reward with auto resolved)."""
        if self.rl_reward != "auto":
            return self.rl_reward
        return "grader" if self.method != "ppo" and self.grader else "reward_model"


CLOUD_PARAMETERS = {
    "deploy_model": "the tuned model is written as a Hugging Face folder under output_dir "
    "(the summary names it); `rlhfkit infer model=FOLDER` answers prompts with it",
    "project": "runs use this machine, not a Google Cloud project",
    "location": "runs use this machine, not a Google Cloud region",
    "accelerator_type": "device=auto|cpu|cuda picks the hardware; `rlhfkit launch nproc=N "
    "train-reward|train-rl ...` trains on N processes",
    "tensorboard_resource_id": "TensorBoard logs are written under output_dir: "
    "`tensorboard --logdir OUTPUT_DIR`",
    "encryption_spec_key_name": "files are written unencrypted under output_dir; use the "
    "disk's encryption",
}
"""Vertex AI parameters about Google Cloud, accepted so a notebook's `parameter_values` runs
unchanged, each with what stands for it locally. They change nothing."""


def cloud_parameter_lines(values: dict[str, Any]) -> list[str]:
    """Remove the Vertex AI cloud parameters from `values`; one line for each removed."""
    lines = []
    for key in [k for k in values if k in CLOUD_PARAMETERS]:
        values.pop(key)
        lines.append(f"{key}: no local meaning, ignored ({CLOUD_PARAMETERS[key]})")
    return lines


PATH_PARAMETERS = ("preference_dataset", "prompt_dataset", "eval_dataset", "grader")
"""The input files a pipeline config names (`relative_to` of load_pipeline_config)."""


def load_pipeline_config(
    path: str | Path | None,
    overrides: list[str] | dict[str, Any] | None = None,
    relative_to: Path | None = None,
) -> PipelineConfig:
    """Defaults < YAML file < overrides; `reward_model_options.KEY=V` and `rl_options.KEY=V`
    overrides set one stage parameter each. With `relative_to` (`rlhfkit demo`: the installed
    package), the file's relative PATH_PARAMETERS start there instead of the working
    directory; the overrides' and output_dir still start at the working directory."""
    values: dict[str, Any] = read_yaml(path) if path else {}
    if relative_to is not None:
        for key in PATH_PARAMETERS:
            if isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
                values[key] = str(relative_to / values[key])
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key, value in (overrides or {}).items():
        group, dot, name = key.partition(".")
        if dot and group in ("reward_model_options", "rl_options"):
            values[group] = {**(values.get(group) or {}), name: value}
        else:
            values[key] = value
    for line in cloud_parameter_lines(values):
        logger.warning(line)
    return build_config(PipelineConfig, values, source=str(path) if path else "parameters")
