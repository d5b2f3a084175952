import json
import subprocess
import sys

import pytest
import torch

from rlhfkit.config import build_config
from rlhfkit.errors import ConfigError
from rlhfkit.rollout.experience import Experience
from rlhfkit.tracking import read_metrics
from rlhfkit.train.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.train.methods import load_rl_config, train_rl
from test_rl_train import TOPICS, assert_sigkilled_run_resumes_identically, write_prompts

LENGTH_GRADER = """\
type: python
name: length
timeout_seconds: 5
source: |
  def grade(sample, item):
      return min(1.0, len(sample["output_text"]) / 40)
"""

MULTI_GRADER = """\
type: multi
name: both
graders:
  length:
    type: python
    source: |
      def grade(sample, item):
          return min(1.0, len(sample["output_text"]) / 40)
  topic:
    type: string_check
    input: "{{sample.output_text}}"
    reference: "{{item.topic}}"
    operation: ilike
calculate_output: "0.5 * length + 0.5 * topic"
"""

VARIED_GRADER = """\
type: python
name: varied
source: |
  def grade(sample, item):
      return (len(sample["output_text"]) % 7) / 7
"""

ODD_TOPICS_GRADER = """\
type: python
name: odd_topics
source: |
  def grade(sample, item):
      if len(item["topic"]) % 2:
          return (len(sample["output_text"]) % 7) / 7
      return 0.5
"""
"""Grades that vary for topics of odd length and agree for the others."""

CONSTANT_GRADER = """\
type: python
name: constant
source: |
  def grade(sample, item):
      return 1.0
"""


def write_topic_prompts(path, n=16):
    rows = [
        {"input_text": f"In one sentence, what is {TOPICS[i % 16]}?", "topic": TOPICS[i % 16]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_grpo_args(tmp_path, grader_text=MULTI_GRADER, **overrides):
    grader = tmp_path / "grader.yaml"
    grader.write_text(grader_text)
    values = {
        "method": "grpo",
        "prompt_dataset": str(write_topic_prompts(tmp_path / "prompts.jsonl")),
        "grader": str(grader),
        "large_model_reference": "tiny-random-llama",
        "n_epochs": 1,
        "batch_size": 2,
        "compute_multiplier": 4,
        "micro_batch_size": 4,
        "target_sequence_length": 8,
        "prompt_sequence_length": 64,
        "eval_prompts": 2,
        "eval_fraction": 0.125,
        "eval_interval": 1,
        "save_every": 100,
        "sample_every": 2,
        "learning_rate_multiplier": 10,
        "dtype": "fp32",
        "output_dir": str(tmp_path / "run"),
    }
    values.update(overrides)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_trainer(tmp_path, grader_text=VARIED_GRADER, **overrides) -> GRPOTrainer:
    pairs = dict(a.split("=", 1) for a in tiny_grpo_args(tmp_path, grader_text))
    pairs.update(save_merged=False, **overrides)
    return GRPOTrainer(build_config(GRPOConfig, pairs))


def test_method_picks_the_config_class(tmp_path):
    ppo = load_rl_config(None, ["prompt_dataset=p.jsonl", "reward_model=rm"])
    grpo = load_rl_config(None, ["method=rloo", "prompt_dataset=p.jsonl", "grader=g.yaml"])
    assert type(ppo).__name__ == "RLConfig" and ppo.kl_coeff == 0.1
    assert isinstance(grpo, GRPOConfig) and grpo.kl_coeff == 0.0 and grpo.method == "rloo"
    # 14 prompts, 2 epochs, 4 per step: ceil(28 / 4) = 7 steps
    assert (
        grpo.total_steps(14) == 14 * 1 // 4 + 1
        and GRPOConfig(prompt_dataset="p", n_epochs=2, batch_size=4).total_steps(14) == 7
    )


def test_tiny_grpo_cli_run_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "train-rl", *tiny_grpo_args(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "run"
    rows = read_metrics(run)
    # 14 training prompts / 2 per step = 7 steps, evaluated before training and every step
    steps = [r for r in rows if "train_reward_mean" in r]
    assert len(steps) == 7
    for key in (
        "valid_reward_mean",
        "frac_reward_zero_std",
        "grader/length_mean",
        "grader/topic_mean",
        "grader/error_rate",
        "rollout/response_length",
        "timing/sampling",
        "timing/grading",
        "timing/training",
        "policy/clipfrac",
    ):
        assert key in steps[-1], key
    # one pass per batch, one mini-batch: the ratio is exactly 1, nothing is clipped
    assert all(r["policy/clipfrac"] == 0 and r["policy/ratio"] == 1 for r in steps)
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_checkpoints"]
    assert len(best) == 3
    scores = [b["valid_reward_mean"] for b in best]
    assert scores == sorted(scores, reverse=True)
    evals = {r["step"]: r["valid_reward_mean"] for r in rows if r["step"] >= 1}
    assert scores[0] == max(evals.values())
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    newest = "step-000007"
    assert newest in kept and len(kept) <= 4
    assert {f"step-{b['step']:06d}" for b in best} <= set(kept)
    assert (run / "policy/adapter_model.safetensors").is_file()
    assert not (run / "policy/value_head.safetensors").exists()
    assert (run / "model/config.json").is_file()
    assert "best checkpoint:" in proc.stdout


def test_grpo_update_changes_the_adapter_and_rloo_runs(tmp_path):
    pairs = dict(a.split("=", 1) for a in tiny_grpo_args(tmp_path, method="rloo"))
    pairs.update(n_epochs=1, save_merged=False, epochs_per_batch=2, mini_batch_size=4)
    config = build_config(GRPOConfig, pairs)
    trainer = GRPOTrainer(config)
    before = {k: v.detach().clone() for k, v in trainer.params.items()}
    trainer.run()
    changed = [k for k, v in trainer.params.items() if not torch.equal(v, before[k])]
    assert changed and all("lora_" in k for k in changed)
    rows = [r for r in read_metrics(tmp_path / "run") if "train_reward_mean" in r]
    # two mini-batches and two passes: later updates see a moved policy
    assert any(r["policy/approx_kl"] > 0 for r in rows)


def test_grpo_loss_parameters_take_trl_names_and_are_checked():
    def config(**values):
        return build_config(GRPOConfig, {"prompt_dataset": "p.jsonl", "grader": "g", **values})

    default = config()
    assert (default.resolved_loss_type, default.clip_low, default.clip_high) == ("bnpo", 0.2, 0.2)
    assert config(loss_aggregation="sequence_mean").resolved_loss_type == "grpo"
    assert config(loss_type="dapo").resolved_loss_type == "dapo"
    assert (config(epsilon=0.1).clip_low, config(epsilon=0.1).clip_high) == (0.1, 0.1)
    assert config(cliprange=0.3, epsilon_high=0.28).clip_high == 0.28
    assert config(epsilon=0.3, cliprange=0.3).clip_low == 0.3
    refused = {
        "loss_type": {"loss_type": "token_mean"},
        "loss_aggregation": {"loss_type": "dapo", "loss_aggregation": "sequence_mean"},
        "cliprange": {"epsilon": 0.1, "cliprange": 0.3},
        "epsilon_high": {"epsilon_high": 0},
        "importance_sampling_level": {"importance_sampling_level": "answer"},
    }
    for name, values in refused.items():
        with pytest.raises(ConfigError, match=name):
            config(**values)


def test_grpo_loss_variants_train_and_log(tmp_path):
    trainer = tiny_trainer(
        tmp_path, ODD_TOPICS_GRADER, train_steps=3, log_every=1, eval_interval=3,
        epochs_per_batch=2, mini_batch_size=4, loss_type="dapo", epsilon_high=0.28,
        importance_sampling_level="sequence", skip_zero_std_groups=True,
    )  # fmt: skip
    before = {k: v.detach().clone() for k, v in trainer.params.items()}
    trainer.run()
    changed = [k for k, v in trainer.params.items() if not torch.equal(v, before[k])]
    assert changed and all("lora_" in k for k in changed)
    rows = [r for r in read_metrics(tmp_path / "run") if "train_reward_mean" in r]
    assert len(rows) == 3
    for row in rows:
        # 2 groups per step: those whose grades all agree are the ones skipped
        assert row["skipped_groups"] == row["frac_reward_zero_std"] * 2
        assert row["update_skipped"] == float(row["skipped_groups"] == 2)
    assert any(r["skipped_groups"] == 1 and r["grad_norm"] > 0 for r in rows)
    assert any(r["policy/approx_kl"] > 0 for r in rows)  # two passes, two mini-batches


def test_a_step_with_every_group_skipped_takes_no_optimizer_step(tmp_path):
    trainer = tiny_trainer(
        tmp_path, CONSTANT_GRADER, train_steps=2, log_every=1, save_every=1,
        skip_zero_std_groups=True, mask_truncated_completions=True,
    )  # fmt: skip
    before = {k: v.detach().clone() for k, v in trainer.params.items()}
    result = trainer.run()
    assert all(torch.equal(v, before[k]) for k, v in trainer.params.items())
    assert not trainer.optimizer.state  # AdamW never stepped (no momentum, no decay)
    rows = [r for r in read_metrics(tmp_path / "run") if "train_reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2] and trainer.scheduler.last_epoch == 2
    for row in rows:
        assert row["skipped_groups"] == 2 and row["update_skipped"] == 1
        assert row["grad_norm"] == 0 and "learning_rate" in row
        assert row["truncated_fraction"] == 1 - row["rollout/ended_fraction"]
    assert (tmp_path / "run/checkpoints/step-000002/state.pt").is_file()
    assert result.steps == 2 and (tmp_path / "run/summary.json").is_file()


def test_micro_batches_add_up_to_the_mini_batch_gradient(tmp_path, monkeypatch):
    """dapo, grpo and dr_grpo normalise over the whole mini-batch, so the gradient does not
    depend on how it is split into micro-batches; bnpo normalises each micro-batch."""
    trainer = tiny_trainer(tmp_path)
    try:
        rollout = trainer._sample(trainer.data.train_ids[:2], per_prompt=4)
        mask = rollout.response_mask.float().clone()
        for row in range(8):  # 1, 2, 3, 1 | 2, 3, 1, 2 tokens enter the loss: 7 | 8
            mask[row, row % 3 + 1 :] = 0.0
        advantages = torch.linspace(-1.0, 1.0, 8)[:, None] * mask
        old = trainer._no_grad_pass(rollout).logprobs
        experience = Experience(mask, advantages, old + 0.05 * mask)
        grads: dict[str, torch.Tensor] = {}

        def step(params):
            grads.update({k: p.grad.clone() for k, p in params.items() if p.grad is not None})
            trainer.optimizer.zero_grad(set_to_none=True)
            return 0.0

        monkeypatch.setattr(trainer.parallel, "step", step)

        def gradient(loss_type, micro_batch_size):
            trainer.config.loss_type = loss_type
            trainer.config.micro_batch_size = micro_batch_size
            trainer._mini_batch(rollout, experience, torch.arange(8), None, False)
            return torch.cat([g.flatten() for _, g in sorted(grads.items())])

        for loss_type in ("dapo", "grpo", "dr_grpo", "bnpo"):
            whole, split = gradient(loss_type, 8), gradient(loss_type, 4)
            gap = ((whole - split).norm() / whole.norm()).item()
            assert whole.norm() > 0
            assert gap > 1e-2 if loss_type == "bnpo" else gap < 1e-5, (loss_type, gap)
    finally:
        trainer._close()


def test_ppo_can_use_a_grader_as_its_reward(tmp_path):
    args = tiny_grpo_args(tmp_path, method="ppo")
    keep = {
        "prompt_dataset", "grader", "large_model_reference", "target_sequence_length",
        "prompt_sequence_length", "eval_prompts", "eval_fraction", "dtype", "output_dir",
    }  # fmt: skip
    args = [a for a in args if a.split("=")[0] in keep] + [
        "method=ppo", "reinforcement_learning_train_steps=2", "batch_size=2",
        "ppo_mini_batch_size=2", "micro_batch_size=2", "eval_every=2", "save_merged=false",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "train-rl", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    assert all(0.0 <= r["reward"] <= 1.0 for r in rows if "reward" in r)


def test_sigkilled_grpo_run_resumes_with_identical_metrics_and_best_checkpoints(tmp_path):
    def args(name, *extra):
        return tiny_grpo_args(
            tmp_path, eval_interval=2, save_every=1, save_merged="false",
            output_dir=tmp_path / name,
        ) + list(extra)  # fmt: skip

    rows = assert_sigkilled_run_resumes_identically(tmp_path, args, kill_at=4)
    assert sum("train_reward_mean" in r for r in rows) == 7
    best_a = json.loads((tmp_path / "a/summary.json").read_text())["best_checkpoints"]
    best_b = json.loads((tmp_path / "b/summary.json").read_text())["best_checkpoints"]
    assert [(c["step"], c["valid_reward_mean"]) for c in best_a] == [
        (c["step"], c["valid_reward_mean"]) for c in best_b
    ]


def test_bad_grader_file_is_refused_before_training(tmp_path):
    args = tiny_grpo_args(tmp_path, grader_text="type: multi\ngraders: {}\ncalculate_output: x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "train-rl", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "grader.yaml" in proc.stdout + proc.stderr
    assert not (tmp_path / "run/checkpoints").exists()


BREVITY_GRADER = """\
type: python
name: brevity
source: |
  def grade(sample, item):
      words = len(sample["output_text"].split())
      return 1.0 if 0 < words <= 8 else max(0.0, 1.0 - (words - 8) / 16)
"""


@pytest.mark.integration
def test_grpo_learns_a_length_limit_with_the_bundled_model(tmp_path):
    grader = tmp_path / "brevity.yaml"
    grader.write_text(BREVITY_GRADER)
    config = GRPOConfig(
        prompt_dataset=str(write_prompts(tmp_path / "prompts.jsonl", n=48)),
        grader=str(grader),
        n_epochs=1,
        batch_size=4,
        compute_multiplier=4,
        micro_batch_size=16,
        target_sequence_length=24,
        temperature=1.0,
        learning_rate_multiplier=3,
        eval_interval=100,
        eval_prompts=12,
        eval_fraction=0.25,
        save_every=100,
        save_merged=False,
        output_dir=str(tmp_path / "run"),
    )
    result = train_rl(config)
    rows = [r for r in read_metrics(tmp_path / "run") if "train_reward_mean" in r]
    first = sum(r["train_reward_mean"] for r in rows[:3]) / 3
    last = sum(r["train_reward_mean"] for r in rows[-3:]) / 3
    assert last > first + 0.2, (first, last)  # a trial run: 0.50 -> 0.89
    assert result.eval_reward_after > result.eval_reward_before + 0.4, result  # 0.30 -> 0.98
