"""An OpenAI reinforcement fine-tuning job body as `train-rl --config job.json`."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.errors import ConfigError
from rlhfkit.tracking import read_metrics
from rlhfkit.train.methods import load_rl_config
from test_rl_train import write_prompts

GRADER = {
    "type": "string_check",
    "name": "says_water",
    "input": "{{sample.output_text}}",
    "reference": "water",
    "operation": "ilike",
}


def job_body(tmp_path, **hyperparameters) -> dict:
    return {
        "model": "o4-mini-2025-04-16",
        "suffix": "water",
        "training_file": str(write_prompts(tmp_path / "train.jsonl", n=8)),
        "validation_file": str(write_prompts(tmp_path / "valid.jsonl", n=4)),
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": GRADER,
                "hyperparameters": {
                    "n_epochs": 1,
                    "batch_size": 2,
                    "learning_rate_multiplier": "auto",
                    "compute_multiplier": 2,
                    "eval_interval": "auto",
                    "eval_samples": 1,
                    "reasoning_effort": "medium",
                    **hyperparameters,
                },
            },
        },
    }


def write_job(tmp_path, body: dict):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    return path


def test_a_job_body_maps_onto_grpo_and_names_what_it_ignores(tmp_path, caplog):
    path = write_job(tmp_path, job_body(tmp_path))
    with caplog.at_level("INFO", logger="rlhfkit.train.methods"):
        config = load_rl_config(path, ["output_dir=" + str(tmp_path / "run")])
    assert (config.method, config.n_epochs, config.batch_size) == ("grpo", 1, 2)
    assert (config.compute_multiplier, config.eval_samples) == (2, 1)
    assert config.prompt_dataset.endswith("train.jsonl")
    assert config.valid_dataset.endswith("valid.jsonl")
    assert config.grader == GRADER
    # "auto" keeps rlhfkit's default, and the run says which value that is
    assert config.learning_rate_multiplier == 1.0 and config.eval_interval == 10
    lines = [record.getMessage() for record in caplog.records]
    assert any(
        "auto take rlhfkit's defaults: learning_rate_multiplier=1.0, eval_interval=10" in line
        for line in lines
    )
    [ignored] = [line for line in lines if "accepted but not used here" in line]
    for name in ("model (", "suffix (", "hyperparameters.reasoning_effort ("):
        assert name in ignored


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training_file": "file-abc123"}, "'file-abc123' is an OpenAI file id; give the path"),
        ({"method": {"type": "supervised", "supervised": {}}}, "for 'supervised' use rlhfkit"),
        ({"method": {"type": "dpo", "dpo": {}}}, "for 'dpo' use rlhfkit train-dpo"),
    ],
)
def test_job_bodies_train_rl_cannot_run_say_why(tmp_path, change, message):
    path = write_job(tmp_path, {**job_body(tmp_path), **change})
    with pytest.raises(ConfigError, match=message):
        load_rl_config(path)


def test_an_unknown_hyperparameter_is_refused_with_the_known_ones(tmp_path):
    path = write_job(tmp_path, job_body(tmp_path, n_epoch=2))
    with pytest.raises(
        ConfigError, match=r"hyperparameters\.n_epoch is not .* n_epochs, batch_size"
    ):
        load_rl_config(path)


def test_train_rl_runs_a_job_body_with_its_inline_grader(tmp_path):
    path = write_job(tmp_path, job_body(tmp_path))
    run = tmp_path / "run"
    args = ["large_model_reference=tiny-random-llama", "target_sequence_length=6", "dtype=fp32"]
    assert main(["train-rl", "--config", str(path), *args, f"output_dir={run}"]) == 0
    rows = [r for r in read_metrics(run) if "train_reward_mean" in r]
    assert len(rows) == 4  # 8 prompts, 2 per step, one epoch
    assert all(0 <= r["train_reward_mean"] <= 1 for r in rows)  # a string check: 0 or 1
    assert json.loads((run / "config.json").read_text())["grader"] == GRADER  # kept with the run
