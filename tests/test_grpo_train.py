import json
import subprocess
import sys

import pytest
import torch

from rlhfkit.tracking import read_metrics
from rlhfkit.train.grpo import GRPOConfig
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
    from rlhfkit.config import build_config
    from rlhfkit.train.grpo import GRPOTrainer

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
