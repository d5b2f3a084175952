"""`rlhfkit train-dpo` on the tiny model: the reference, the step, outputs, resume."""

import json
import subprocess
import sys

import pytest
import torch

from rlhfkit.config import load_config
from rlhfkit.errors import ConfigError
from rlhfkit.models.loading import load_model, load_tokenizer
from rlhfkit.models.policy import build_policy
from rlhfkit.tracking import read_metrics
from rlhfkit.train.dpo import DPOConfig, train_dpo
from rlhfkit.train.pairs import EncodedPair
from rlhfkit.train.reference import REFERENCE_FILE, pair_logps, reference_pass
from test_reward_train import keyword_preferences


def dpo_config(tmp_path, data, **overrides):
    values = {
        "preference_dataset": str(data),
        "large_model_reference": "tiny-random-llama",
        "max_steps": 6,
        "batch_size": 8,
        "micro_batch_tokens": 256,
        "eval_every": 3,
        "save_every": 3,
        "dtype": "fp32",
        "learning_rate_multiplier": 10,
        "output_dir": str(tmp_path / "run"),
    }
    values.update(overrides)
    return load_config(DPOConfig, None, {k: str(v) for k, v in values.items()})


def whole_sequence_logps(model, prompt: list[int], answer: list[int]) -> float:
    """Summed log-probability of `answer` after `prompt` from one plain transformers pass."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()  # (1, T, V)
    logprobs = torch.log_softmax(logits[0, len(prompt) - 1 : -1], -1)  # predicts the answer
    return logprobs.gather(-1, torch.tensor(answer)[:, None]).sum().item()


def test_reference_and_packed_policy_log_probs_equal_plain_transformers():
    # two pairs of different lengths in one packed micro-batch; the adapter has weights,
    # so the policy differs from the reference (the base with the adapter off)
    policy = build_policy("tiny-random-llama", 4, 8.0, ["q_proj", "v_proj"], False, "fp32", "cpu")
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    pairs = [
        EncodedPair([5, 6, 7, 8], [11, 12, 2], [13, 2], 0.0),
        EncodedPair([9, 10], [14, 15, 16, 17, 2], [18, 19, 2], 0.0),
    ]
    reference = reference_pass(policy, pairs, pad_id=0, max_tokens=4096, use_bf16=False, multiple=1)
    base = load_model("tiny-random-llama", dtype="fp32", device="cpu")
    for row, pair in enumerate(pairs):
        for col, answer in enumerate((pair.chosen, pair.rejected)):
            expected = whole_sequence_logps(base, pair.prompt, answer)
            assert reference[row, col].item() == pytest.approx(expected, abs=1e-4)
    # the policy with gradients on (the packed training pass) against the merged weights
    sums = pair_logps(policy, pairs, pad_id=0, multiple=1)
    sums.sum().backward()  # the pass keeps its graph
    for row, pair in enumerate(pairs):
        for col, answer in enumerate((pair.chosen, pair.rejected)):
            expected = whole_sequence_logps(policy.backbone, pair.prompt, answer)
            assert sums[row, col].item() == pytest.approx(expected, abs=1e-4)
            assert sums[row, col].item() != pytest.approx(reference[row, col].item(), abs=1e-3)


def test_tiny_run_learns_the_rule_writes_outputs_and_logs_trl_names(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 60)
    result = train_dpo(dpo_config(tmp_path, data, max_steps=12, eval_every=6, save_every=6))
    rows = read_metrics(result.run_dir)
    steps = [r for r in rows if "rewards/margins" in r and "valid/loss" not in r]
    trl_names = (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "pairs_per_second",
    )
    for name in trl_names:
        assert name in rows[0], name
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.02
    assert steps[-1]["rewards/margins"] > steps[0]["rewards/margins"]
    final = rows[-1]
    held_out = (
        "eval/accuracy",
        "eval/accuracy_ci95_low",
        "eval/accuracy_chosen_longer",
        "eval/accuracy_chosen_shorter",
        "eval/longer_baseline_accuracy",
        "best_step",
    )
    for name in held_out:
        assert name in final, name
    # the adapter changed, the merged folder loads with plain transformers and differs
    from safetensors.torch import load_file

    adapter = load_file(result.policy_dir / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = load_model("tiny-random-llama", dtype="fp32", device="cpu")
    prompt, answer = [5, 6, 7], [8, 9, 2]
    assert whole_sequence_logps(tuned.float(), prompt, answer) != pytest.approx(
        whole_sequence_logps(base, prompt, answer), abs=1e-4
    )
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["eval_pairs"] == result.eval_pairs == 6


def test_reference_is_computed_once_and_a_partial_cache_is_continued(tmp_path, monkeypatch):
    data = keyword_preferences(tmp_path / "p.jsonl", 30)
    config = dpo_config(tmp_path, data, max_steps=2, eval_every=2, save_every=2)
    train_dpo(config)
    cache = tmp_path / "run" / REFERENCE_FILE
    full = json.loads(cache.read_text())
    # 2 steps of 8 take 16 of the 24 training pairs; 3 validation and 3 held-out pairs
    assert [len(full[s]) for s in ("train", "validation", "eval")] == [16, 3, 3]
    # a run killed while computing them: 10 training pairs are in the file
    kept = dict(list(full["train"].items())[:10])
    partial = {**full, "train": kept, "validation": {}, "eval": {}}
    other = tmp_path / "other"
    other.mkdir()
    (other / REFERENCE_FILE).write_text(json.dumps(partial))
    computed = []
    import rlhfkit.train.dpo as dpo

    real = dpo.reference_pass

    def counting(policy, pairs, *args):
        computed.append(len(pairs))
        return real(policy, pairs, *args)

    monkeypatch.setattr(dpo, "reference_pass", counting)
    train_dpo(dpo_config(tmp_path, data, max_steps=2, eval_every=2, output_dir=other))
    assert sum(computed) == 22 - 10
    again = json.loads((other / REFERENCE_FILE).read_text())
    for split in ("train", "validation", "eval"):
        assert again[split].keys() == full[split].keys()
        for index, values in full[split].items():
            assert again[split][index] == pytest.approx(values, abs=1e-5)


def test_resumed_run_matches_an_unbroken_one(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    common = {"lr_schedule": "constant", "warmup_steps": 0, "eval_every": 2, "save_every": 2}
    whole = train_dpo(dpo_config(tmp_path, data, max_steps=4, output_dir=tmp_path / "a", **common))
    train_dpo(dpo_config(tmp_path, data, max_steps=2, output_dir=tmp_path / "b", **common))
    resumed = train_dpo(
        dpo_config(tmp_path, data, max_steps=4, output_dir=tmp_path / "b", resume=True, **common)
    )
    assert resumed.eval_loss == pytest.approx(whole.eval_loss, abs=1e-5)
    losses = lambda run: [r["loss"] for r in read_metrics(run) if "loss" in r]  # noqa: E731
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), abs=1e-5)


def test_full_finetune_writes_a_plain_model_folder(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 20)
    result = train_dpo(
        dpo_config(tmp_path, data, max_steps=2, full_finetune=True, learning_rate_multiplier=0.1)
    )
    assert result.policy_dir is None
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = load_model("tiny-random-llama", dtype="fp32", device="cpu")
    changed = [
        name
        for name, p in tuned.named_parameters()
        if not torch.equal(p.float(), dict(base.named_parameters())[name].float())
    ]
    assert changed
    assert load_tokenizer(str(result.model_dir)) is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"loss_type": "kto"}, "sigmoid"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"beta": 0}, "beta"),
        ({"early_stopping_patience": 2, "validation_fraction": 0}, "validation_fraction"),
    ],
)
def test_bad_settings_are_refused_with_the_field(tmp_path, override, message):
    data = keyword_preferences(tmp_path / "p.jsonl", 10)
    with pytest.raises(ConfigError, match=message):
        dpo_config(tmp_path, data, **override)


def test_cli_trains_from_openai_preference_rows_and_prints_the_verdict(tmp_path):
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Describe item {i}."}]},
            "preferred_output": [{"role": "assistant", "content": f"Item {i} is excellent."}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        }
        for i in range(12)
    ]
    data = tmp_path / "openai.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhfkit.cli",
            "train-dpo",
            f"preference_dataset={data}",
            "large_model_reference=tiny-random-llama",
            "max_steps=2",
            "batch_size=4",
            "dtype=fp32",
            f"output_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "held-out implicit-reward accuracy" in out.stdout
    assert "merged model:" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhfkit.cli",
            "train-dpo",
            f"preference_dataset={data}",
            "loss_type=kto",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "loss_type" in bad.stderr and "Traceback" not in bad.stderr
