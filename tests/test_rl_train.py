import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlhfkit.config import build_config
from rlhfkit.models.policy import build_policy, cut_at_eos
from rlhfkit.tracking import read_metrics
from rlhfkit.train.methods import train_rl
from rlhfkit.train.ppo import RLConfig

TOPICS = [
    "the moon", "rivers", "bread", "chess", "volcanoes", "bicycles", "owls", "glass",
    "tea", "maps", "clocks", "bees", "snow", "bridges", "paper", "salt",
]  # fmt: skip


def write_prompts(path, n=16):
    rows = [
        {"input_text": f"In one sentence, what is {TOPICS[i % len(TOPICS)]}?", "id": i}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_args(tmp_path, reward_dir, **overrides):
    values = {
        "prompt_dataset": str(write_prompts(tmp_path / "prompts.jsonl")),
        "reward_model": str(reward_dir),
        "large_model_reference": "tiny-random-llama",
        "reinforcement_learning_train_steps": 4,
        "batch_size": 4,
        "ppo_mini_batch_size": 2,
        "micro_batch_size": 2,
        "target_sequence_length": 8,
        "prompt_sequence_length": 64,
        "eval_prompts": 2,
        "eval_fraction": 0.125,
        "eval_every": 2,
        "save_every": 2,
        "sample_every": 2,
        "kl_coeff": 0.05,
        "reinforcement_learning_rate_multiplier": 10,
        "dtype": "fp32",
        "output_dir": str(tmp_path / "run"),
    }
    values.update(overrides)
    return [f"{k}={v}" for k, v in values.items()]


def _cli(args):
    return subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_cut_at_eos_keeps_the_end_token_and_pads_after_it():
    generated = torch.tensor([[5, 2, 7, 7], [5, 6, 7, 8], [2, 2, 2, 2]])
    ids, mask, ended = cut_at_eos(generated, eos_id=2, pad_id=0)
    assert ids.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_reference_is_the_base_model_and_policy_starts_equal_to_it():
    from rlhfkit.models.loading import load_model

    torch.manual_seed(0)
    policy = build_policy("tiny-random-llama", 4, 8.0, ["q_proj", "v_proj"], True, "fp32")
    rollout = policy.sample([[5, 6, 7], [9, 10]], 6, eos_id=2, pad_id=2, temperature=1.0)
    logprobs, values, _ = policy(rollout)
    reference = policy.reference_logprobs(rollout)
    assert torch.allclose(logprobs, reference, atol=1e-5)  # LoRA B starts at zero
    assert values.abs().max().item() == 0.0  # value head starts at zero
    with torch.no_grad():  # move the adapter: the policy changes, the reference does not
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    moved, _, _ = policy(rollout)
    assert (moved - logprobs).abs().max().item() > 1e-3
    assert torch.allclose(policy.reference_logprobs(rollout), reference, atol=1e-5)

    base = load_model("tiny-random-llama", dtype="fp32")
    ids = torch.cat([rollout.query_ids, rollout.response_ids], 1)
    mask = torch.cat([rollout.query_mask, rollout.response_mask], 1)
    logits = base(
        input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
    ).logits
    width = rollout.query_ids.shape[1]
    answer = logits[:, width - 1 : -1].log_softmax(-1)
    expected = answer.gather(-1, rollout.response_ids[..., None]).squeeze(-1)
    real = rollout.response_mask.bool()
    assert torch.allclose(reference[real], expected[real], atol=1e-4)


def test_groups_share_their_prompt_in_sampling_and_forward():
    """Several answers per prompt: the prompt is computed once (its cache repeated), and
    gives the same answers, log-probabilities and gradients as computing it per answer."""
    from dataclasses import replace

    torch.manual_seed(0)
    policy = build_policy("tiny-random-llama", 4, 8.0, ["q_proj", "v_proj"], False, "fp32")
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    prompts = [[5, 6, 7, 8], [9, 10]]
    shared = policy.sample(prompts, 6, eos_id=2, pad_id=2, do_sample=False, per_prompt=3)
    alone = policy.sample([p for p in prompts for _ in range(3)], 6, 2, 2, do_sample=False)
    assert shared.group == 3 and alone.group == 1
    assert torch.equal(shared.query_ids, alone.query_ids)
    assert torch.equal(shared.response_ids, alone.response_ids)

    # sampled answers differ within a group; score them both ways
    torch.manual_seed(1)
    rollout = policy.sample(prompts, 6, 2, 2, temperature=1.5, per_prompt=3)
    assert len({tuple(r.tolist()) for r in rollout.response_ids[:3]}) > 1
    grads = []
    for group in (3, 1):
        policy.zero_grad()
        logprobs, _, _ = policy(replace(rollout, group=group))
        (logprobs * rollout.response_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad})
        if group == 3:
            grouped = logprobs.detach()
    real = rollout.response_mask.bool()
    assert torch.allclose(grouped[real], logprobs.detach()[real], atol=1e-5)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-5, rtol=1e-4), name


def test_reward_model_on_the_policy_base_scores_like_a_separate_copy(tiny_reward_model):
    from rlhfkit.models.reward import ResponseBatch, attach_reward_model, load_reward_model

    policy = build_policy("tiny-random-llama", 4, 8.0, ["q_proj", "v_proj"], True, "fp32")
    with torch.no_grad():  # a trained-looking policy adapter must not leak into the scores
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    shared = attach_reward_model(tiny_reward_model, policy.backbone)
    alone = load_reward_model(tiny_reward_model, dtype="fp32")
    batch = ResponseBatch.build([[5, 6, 7], [8, 9]], [[10, 11], [12], [13], [14, 15, 2]], 2)
    scores = shared(batch)
    assert torch.allclose(scores, alone(batch), atol=1e-5)
    assert scores.abs().max().item() > 0
    # after scoring the policy adapter is active and the only trainable part again
    assert policy.backbone.active_adapter == "policy"
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all(".policy." in n or n.startswith("value_head") for n in trainable)
    # one copy of the base weights: the reward model reads the policy's own tensors
    assert shared.backbone is policy.backbone


def test_tiny_cli_run_end_to_end(tmp_path, tiny_reward_model):
    from transformers import AutoModelForCausalLM

    proc = _cli(["train-rl", *tiny_args(tmp_path, tiny_reward_model)])
    out = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, out
    assert "held-out reward (greedy answers, 2 prompts)" in out
    run = tmp_path / "run"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for tag in (
        "reward", "kl_loss", "rl_loss", "objective/kl", "objective/entropy", "policy/approx_kl",
        "policy/clipfrac", "value/explained_variance", "rollout/response_length",
        "timing/rollout", "timing/score", "timing/update", "tokens_per_second",
    ):  # fmt: skip
        assert tag in rows[1], tag
    assert "eval/reward" in rows[0] and "eval/reward" in rows[2]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {2, 4} and all("answer" in s for s in samples)
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    assert (run / "policy/adapter_model.safetensors").is_file()
    assert (run / "policy/value_head.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4

    # the merged folder loads with plain transformers and equals base + adapter
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    from peft import PeftModel

    from rlhfkit.models.loading import load_model

    with_adapter = PeftModel.from_pretrained(
        load_model("tiny-random-llama", "fp32"), run / "policy"
    )
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        a, b = merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    base = load_model("tiny-random-llama", "fp32")
    with torch.no_grad():
        assert (base(input_ids=ids).logits - a).abs().max().item() > 1e-4  # it did train


def test_missing_reward_model_is_a_clear_error(tmp_path):
    proc = _cli(["train-rl", f"prompt_dataset={write_prompts(tmp_path / 'p.jsonl')}"])
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 2
    assert "no reward: set reward_model" in out and "grader" in out and "Traceback" not in out
    proc = _cli(["train-rl", f"prompt_dataset={tmp_path / 'p.jsonl'}", f"reward_model={tmp_path}"])
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 2
    assert "is not a reward-model folder" in out and "Traceback" not in out


def assert_sigkilled_run_resumes_identically(tmp_path, args, kill_at: int) -> list[dict]:
    """Run `args(name, *extra)` straight through, and again killed (SIGKILL) once the
    checkpoint of step `kill_at` exists, then resumed: metrics and samples must match.
    Returns the straight run's metrics."""
    straight = _cli(["train-rl", *args("a")])
    assert straight.wait(600) == 0, straight.stdout.read().decode()

    killed = _cli(["train-rl", *args("b")])
    deadline = time.time() + 600
    while not (tmp_path / f"b/checkpoints/step-{kill_at:06d}/state.pt").exists():
        assert time.time() < deadline and killed.poll() is None
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "b/policy").exists()

    resumed = _cli(["train-rl", *args("b", "resume=true")])
    assert resumed.wait(600) == 0, resumed.stdout.read().decode()

    def strip(rows):
        return [
            {k: v for k, v in r.items() if not k.startswith(("timing/", "tokens_per"))}
            for r in rows
        ]

    a, b = strip(read_metrics(tmp_path / "a")), strip(read_metrics(tmp_path / "b"))
    assert a == b
    samples_a = (tmp_path / "a/samples.jsonl").read_text()
    assert samples_a == (tmp_path / "b/samples.jsonl").read_text()
    summary_a = json.loads((tmp_path / "a/summary.json").read_text())
    summary_b = json.loads((tmp_path / "b/summary.json").read_text())
    for key in ("eval_reward_before", "eval_reward_after"):
        assert summary_a[key] == summary_b[key]
    return a


def test_sigkilled_run_resumes_with_identical_metrics(tmp_path, tiny_reward_model):
    def args(name, *extra):
        return tiny_args(
            tmp_path, tiny_reward_model, reinforcement_learning_train_steps=8, save_every=2,
            eval_every=4, log_every=3, save_merged="false", output_dir=tmp_path / name,
        ) + list(extra)  # fmt: skip

    # killed after step 4: the row of step 6 averages steps 4 to 6 in both runs
    rows = assert_sigkilled_run_resumes_identically(tmp_path, args, kill_at=4)
    assert [r["step"] for r in rows if "reward" in r] == [3, 6, 8]


def test_first_epoch_reusing_the_old_policy_forward_matches_separate_passes(
    tmp_path, tiny_reward_model
):
    """One micro-batch per batch: the first epoch's forward also gives the old log-probs and
    values. Two micro-batches: separate no-gradient passes. Same update either way."""
    from rlhfkit.train.ppo import PPOTrainer

    def run(name, micro):
        pairs = dict(a.split("=", 1) for a in tiny_args(tmp_path, tiny_reward_model))
        pairs.update(
            reinforcement_learning_train_steps=1, ppo_mini_batch_size=4, ppo_epochs=2,
            micro_batch_size=micro, save_merged=False, output_dir=str(tmp_path / name),
        )  # fmt: skip
        config = build_config(RLConfig, pairs)
        trainer = PPOTrainer(config)
        assert trainer._fuses_first_pass == (micro == 4)
        start = {k: v.detach().clone() for k, v in trainer.params.items()}
        trainer.run()
        moved = {k: v.detach() - start[k] for k, v in trainer.params.items()}
        return moved, read_metrics(tmp_path / name)[1]

    fused, fused_row = run("fused", 4)
    separate, separate_row = run("separate", 2)
    # Adam moves a weight by about the learning rate whatever its gradient's size, so a
    # gradient that is float noise (different padding) may move either way: compare the
    # updates as a whole, not weight by weight
    gap = sum((fused[k] - separate[k]).abs().sum() for k in fused)
    size = sum(fused[k].abs().sum() for k in fused)
    assert gap < 0.01 * size, (gap, size)
    for key in ("reward", "objective/kl", "rl_loss", "policy/approx_kl", "value/loss"):
        assert fused_row[key] == pytest.approx(separate_row[key], rel=1e-4, abs=1e-6), key


def brevity(records, answers, ended):
    """Known reward: shorter answers score higher (-words / 10)."""
    return torch.tensor([-len(a.split()) / 10 for a in answers])


@pytest.mark.integration
def test_ppo_learns_a_known_reward_with_the_bundled_model(tmp_path):
    config = RLConfig(
        prompt_dataset=str(write_prompts(tmp_path / "prompts.jsonl")),
        reinforcement_learning_train_steps=14,
        batch_size=8,
        ppo_mini_batch_size=4,
        target_sequence_length=24,
        temperature=1.0,
        reinforcement_learning_rate_multiplier=3,
        eval_every=100,
        save_every=100,
        eval_fraction=0.25,
        save_merged=False,
        output_dir=str(tmp_path / "run"),
    )
    result = train_rl(config, reward_fn=brevity)
    rows = [r for r in read_metrics(tmp_path / "run") if "reward" in r]
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-3:]) / 3
    # about 20 words (-2.0) at the start; the 12-step trial run ended near 12 words
    assert last > first + 0.3, (first, last)
    assert result.eval_reward_after > result.eval_reward_before + 0.4
    assert max(r["objective/kl"] for r in rows) < 15.0


def test_ppo_mini_batch_follows_batch_size_unless_set():
    from rlhfkit.config import build_config
    from rlhfkit.errors import ConfigError

    def mini(**values):
        return build_config(RLConfig, {"prompt_dataset": "p.jsonl", **values}).mini_batch_size

    # the old default 8 where it divides the batch, else the largest divisor below it
    assert [mini(batch_size=b) for b in (4, 8, 12, 16, 7)] == [4, 8, 6, 8, 7]
    assert mini(batch_size=16, ppo_mini_batch_size=4) == 4
    with pytest.raises(ConfigError, match="ppo_mini_batch_size=8 is invalid: must divide"):
        mini(batch_size=4, ppo_mini_batch_size=8)


def test_a_warmup_as_long_as_the_run_is_cut_to_a_tenth_of_it(caplog):
    from rlhfkit.train.optim import warmup_steps

    assert warmup_steps(10, 50) == 10
    assert caplog.records == []
    assert warmup_steps(10, 4) == 0
    assert warmup_steps(10, 10) == 1
    assert "warmup_steps=10 is not shorter than the run's 4 steps" in caplog.text
