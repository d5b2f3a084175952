import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from rlhfkit.config import load_config
from rlhfkit.eval.score import score_file
from rlhfkit.models.reward import (
    ResponseBatch,
    RewardModelSpec,
    build_reward_model,
    load_reward_model,
)
from rlhfkit.models.shared_prompt import (
    pack_rows,
    packed_forward,
    packed_mask,
    shared_prompt_forward,
    supports_packing,
)
from rlhfkit.tracking import read_metrics
from rlhfkit.train.common import sample_indices, split_held_out, split_to_count
from rlhfkit.train.pairs import EncodedPair, micro_batches, padded_tokens
from rlhfkit.train.reward import RewardConfig, train_reward_model, training_steps
from rlhfkit.train.reward_summary import result_lines

WORDS = [
    "river",
    "garden",
    "market",
    "window",
    "bridge",
    "lantern",
    "meadow",
    "harbour",
    "violin",
    "pepper",
    "castle",
    "forest",
    "candle",
    "silver",
    "ladder",
    "mirror",
]


def keyword_preferences(path: Path, n: int, seed: int = 0) -> Path:
    """A synthetic preference set with an obvious rule: the chosen answer says 'excellent'."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = " ".join(rng.sample(WORDS, 3))
        filler = " ".join(rng.sample(WORDS, 4))
        good = f"The {filler} is excellent."
        bad = f"The {' '.join(rng.sample(WORDS, 4))} is ordinary."
        choice = i % 2
        cands = [good, bad] if choice == 0 else [bad, good]
        rows.append(
            {
                "input_text": f"Describe the {topic}.",
                "candidate_0": cands[0],
                "candidate_1": cands[1],
                "choice": choice,
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tmp_path, data, **overrides):
    values = {
        "preference_dataset": str(data),
        "large_model_reference": "tiny-random-llama",
        "reward_model_train_steps": 6,
        "batch_size": 8,
        "micro_batch_tokens": 256,
        "log_every": 1,
        "eval_every": 3,
        "save_every": 2,
        "dtype": "fp32",
        "output_dir": str(tmp_path / "run"),
    }
    values.update(overrides)
    return load_config(RewardConfig, None, {k: str(v) for k, v in values.items()})


def test_shared_prompt_scoring_equals_scoring_whole_sequences(tokenizer):
    spec = RewardModelSpec(base_model="tiny-random-llama")
    model = build_reward_model(spec, dtype="fp32", device="cpu", head_std=0.1)
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    responses = [[20, 21, 2], [22, 2], [30, 2], [31, 32, 33, 2]]
    shared = model(ResponseBatch.build(prompts, responses, pad_id=2))
    whole = []
    for i, response in enumerate(responses):
        one = ResponseBatch.build([prompts[i // 2] + response[:-1]], [response[-1:]], pad_id=2)
        whole.append(model(one))
    torch.testing.assert_close(shared, torch.cat(whole), atol=1e-5, rtol=1e-5)


def test_mean_pooling_reads_the_mean_of_the_answer_tokens_and_is_saved(tmp_path):
    spec = RewardModelSpec(base_model="tiny-random-llama", pooling="mean")
    model = build_reward_model(spec, dtype="fp32", device="cpu", head_std=0.1).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    responses = [[20, 21, 2], [22, 2], [30, 2], [31, 32, 33, 2]]
    batch = ResponseBatch.build(prompts, responses, pad_id=2)
    with torch.no_grad():
        hidden = shared_prompt_forward(
            model.trunk,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.response_ids,
            batch.response_mask,
        )[1]
        expected = torch.stack([hidden[i, : len(r)].mean(0) for i, r in enumerate(responses)])
        torch.testing.assert_close(model.features(batch), expected, atol=1e-5, rtol=1e-5)
        rewards = model(batch)
    torch.testing.assert_close(rewards, model.head(expected).squeeze(-1), atol=1e-5, rtol=1e-5)
    model.save(tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm", dtype="fp32", device="cpu")
    assert loaded.spec.pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), rewards, atol=1e-5, rtol=1e-5)
    # a folder written before pooling was a setting reads its last token, as it was trained
    spec_file = tmp_path / "rm" / "rlhfkit_reward.json"
    written = json.loads(spec_file.read_text())
    del written["pooling"]
    spec_file.write_text(json.dumps(written))
    assert load_reward_model(tmp_path / "rm", dtype="fp32", device="cpu").spec.pooling == "last"


def test_trunk_layers_keeps_the_first_layers_and_the_final_norm_and_is_saved(tmp_path):
    from rlhfkit.errors import ModelLoadError

    full = build_reward_model(RewardModelSpec(base_model="tiny-random-llama"), "fp32", "cpu")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        after_first = full.trunk(input_ids=ids, output_hidden_states=True).hidden_states[1]
        expected = full.trunk.norm(after_first)
    data = keyword_preferences(tmp_path / "p.jsonl", 60)
    config = tiny_config(tmp_path, data, trunk_layers=1, reward_model_train_steps=2)
    result = train_reward_model(config)
    kept = load_reward_model(result.reward_model_dir, dtype="fp32", device="cpu")
    assert kept.spec.trunk_layers == 1 and len(kept.trunk.layers) == 1
    assert kept.trunk.config.num_hidden_layers == 1
    # training changed only the LoRA adapter; with it switched off the trunk is the base
    with torch.no_grad(), kept.backbone.disable_adapter():
        torch.testing.assert_close(kept.trunk(input_ids=ids).last_hidden_state, expected)
    config = tiny_config(tmp_path, data, trunk_layers=3, output_dir=tmp_path / "too_many")
    with pytest.raises(ModelLoadError, match="the model has 2 decoder layers"):
        train_reward_model(config)


def test_warm_started_head_is_the_fit_on_training_features_and_not_refit_on_resume(tmp_path):
    from rlhfkit.algorithms.reward import fit_linear_head
    from rlhfkit.train.pairs import pair_outputs
    from rlhfkit.train.reward import RewardTrainer

    data = keyword_preferences(tmp_path / "p.jsonl", 60)
    config = tiny_config(
        tmp_path,
        data,
        head_pooling="mean",
        head_warm_start=True,
        reward_model_train_steps=2,
        save_every=1,
        validation_fraction=0,
    )
    trainer = RewardTrainer(config)
    fresh = build_reward_model(
        RewardModelSpec(base_model="tiny-random-llama", pooling="mean"), "fp32", "cpu", 0.0, seed=0
    )
    features = pair_outputs(
        fresh, fresh.features, trainer.data.train, trainer.data.pad_id, 4096, False, 1
    )
    expected = fit_linear_head(features[:, 0] - features[:, 1]).weight
    torch.testing.assert_close(trainer.model.head.weight.detach().view(-1), expected)
    assert trainer.model.head.weight.abs().sum() > 0
    # the fitted head already ranks the keyword rule before any training step
    trainer.run()
    rows = read_metrics(tmp_path / "run")
    assert rows[0]["rank_loss"] < 0.3
    # resuming restores the trained head of the last checkpoint (step 2, also the kept
    # step without validation) instead of fitting the head again
    resumed = RewardTrainer(dataclasses.replace(config, resume=True, reward_model_train_steps=3))
    saved = load_reward_model(tmp_path / "run" / "reward_model", dtype="fp32", device="cpu")
    torch.testing.assert_close(resumed.model.head.weight, saved.head.weight)


def test_sampling_depends_only_on_seed_and_step():
    a = [sample_indices(s, 3, 10, seed=1) for s in range(7)]
    assert a == [sample_indices(s, 3, 10, seed=1) for s in range(7)]
    flat = [i for batch in a for i in batch]
    assert sorted(flat[:10]) == list(range(10))  # the first epoch is a permutation
    assert a != [sample_indices(s, 3, 10, seed=2) for s in range(7)]


def test_micro_batches_keep_to_the_token_budget_and_lose_no_pair():
    def pair(prompt, answer):
        return EncodedPair([1] * prompt, [2] * answer, [3] * (answer - 1), 0.0)

    pairs = [pair(100, 20), pair(30, 10), pair(100, 30), pair(500, 60), pair(32, 12)]
    # widths rounded to 16: (32 + 2*16) = 64 per short pair, (112 + 2*32) = 176 per long one
    assert padded_tokens([pairs[1], pairs[4]], multiple=16) == 2 * 64
    assert padded_tokens([pairs[0], pairs[2]], multiple=16) == 2 * 176
    chunks = micro_batches(pairs, max_tokens=400, multiple=16)
    assert sorted(id(p) for c in chunks for p in c) == sorted(id(p) for p in pairs)
    assert [len(c) for c in chunks] == [2, 2, 1]  # short ones, long ones, the oversize alone
    assert all(padded_tokens(c, 16) <= 400 for c in chunks[:2])
    assert [len(c) for c in micro_batches(pairs, max_tokens=10**6)] == [5]


def test_micro_batches_split_to_the_count_the_other_ranks_run():
    # sizes 3 and 1 -> split the 3 (into 1 + 2) -> split the 2 -> four chunks of one
    chunks = [["a", "b", "c"], ["d"]]
    assert split_to_count(chunks, 2) == chunks
    assert split_to_count(chunks, 3) == [["a"], ["b", "c"], ["d"]]
    assert split_to_count(chunks, 4) == [["a"], ["b"], ["c"], ["d"]]
    assert chunks == [["a", "b", "c"], ["d"]]  # the input is left as it was


def test_tiny_run_loss_falls_and_weights_change(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    config = tiny_config(
        tmp_path,
        data,
        reward_model_train_steps=30,
        eval_every=30,
        save_every=30,
        reward_model_learning_rate_multiplier=10,
        head_init_std=0.02,
        head_pooling="last",
        head_warm_start=False,  # training alone must lower the loss here
    )
    initial = build_reward_model(
        RewardModelSpec(base_model="tiny-random-llama"), "fp32", "cpu", 0.02, seed=0
    )
    before = {n: p.detach().clone() for n, p in initial.named_parameters() if p.requires_grad}
    result = train_reward_model(config)
    rows = [row for row in read_metrics(result.run_dir) if "rank_loss" in row]
    first, last = rows[0]["rank_loss"], sum(r["rank_loss"] for r in rows[-5:]) / 5
    assert last < first - 0.05
    trained = load_reward_model(result.reward_model_dir, dtype="fp32", device="cpu")
    after = dict(trained.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and all(not torch.equal(before[n], after[n]) for n in lora)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    frozen = [n for n, p in trained.named_parameters() if "embed_tokens" in n]
    assert frozen and not any(p.requires_grad for p in trained.parameters())


def test_keyword_rule_is_learned_to_high_held_out_accuracy(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 200)
    config = tiny_config(
        tmp_path,
        data,
        reward_model_train_steps=60,
        eval_every=60,
        save_every=60,
        batch_size=16,
        micro_batch_tokens=4096,
        reward_model_learning_rate_multiplier=6,
        head_init_std=0.02,
        lora_targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        eval_fraction=0.25,
    )
    result = train_reward_model(config)
    assert result.eval_pairs == 50
    assert result.eval_accuracy >= 0.9


def test_best_validation_step_is_kept_and_early_stopping_ends_the_run(tmp_path):
    # the validation pairs carry the opposite rule to the training pairs, so validation
    # rank loss rises as training learns: the first validation (step 2) is the best, and
    # with a patience of 2 the run stops at step 6 of 30
    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    _, validation = split_held_out(len(rows), 0.25, seed=0 + 1)
    for i in validation:
        rows[i]["choice"] = 1 - rows[i]["choice"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = keyword_preferences(tmp_path / "held_out.jsonl", 12, seed=5)
    config = tiny_config(
        tmp_path,
        data,
        eval_dataset=held_out,
        validation_fraction=0.25,
        reward_model_train_steps=30,
        eval_every=2,
        save_every=100,
        early_stopping_patience=2,
        reward_model_learning_rate_multiplier=10,
        head_init_std=0.02,
        head_warm_start=False,  # a fitted head would learn the opposite rule before step 1
    )
    result = train_reward_model(config)
    metrics = read_metrics(result.run_dir)
    losses = {r["step"]: r["valid/rank_loss"] for r in metrics if "valid/rank_loss" in r}
    assert list(losses) == [2, 4, 6] and losses[2] < losses[4] < losses[6]
    assert (result.best_step, result.steps, result.stopped_early) == (2, 6, True)
    assert (result.validation_pairs, result.train_pairs, result.eval_pairs) == (10, 30, 12)
    # reward_model/ holds the step-2 weights, and the held-out figures are that model's
    kept = torch.load(tmp_path / "run/checkpoints/step-000002/state.pt")["trainable"]
    saved = load_reward_model(result.reward_model_dir, dtype="fp32", device="cpu")
    head = saved.head.weight
    assert torch.equal(head, kept["head.weight"])
    scored = score_file(result.reward_model_dir, held_out).pairwise_accuracy
    assert result.eval_accuracy == pytest.approx(scored["accuracy"])
    assert result.eval_accuracy_ci95 == pytest.approx(
        [scored["accuracy_ci95_low"], scored["accuracy_ci95_high"]]
    )
    last = metrics[-1]
    assert last["best_step"] == 2 and last["eval/n"] == 12
    for key in ("accuracy_chosen_longer", "accuracy_chosen_shorter", "longer_baseline_accuracy"):
        assert f"eval/{key}" in last
    # resuming the stopped run does not train further
    again = train_reward_model(dataclasses.replace(config, resume=True))
    assert (again.best_step, again.steps) == (2, 6)


def test_num_epochs_sets_the_steps(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    # 40 pairs: 4 held out, 4 of the other 36 set aside for validation; 1.5 * 32 / 8 = 6
    config = tiny_config(tmp_path, data, num_epochs=1.5, reward_model_train_steps=1000)
    result = train_reward_model(config)
    assert (result.train_pairs, result.steps) == (32, 6)
    # 1.1 * 100 / 10 is 11.000000000000002 in floating point: still 11 steps
    assert training_steps(dataclasses.replace(config, num_epochs=1.1, batch_size=10), 100) == 11


def test_existing_run_needs_resume_and_bad_config_is_refused(tmp_path):
    from rlhfkit.errors import ConfigError

    data = keyword_preferences(tmp_path / "p.jsonl", 20)
    train_reward_model(tiny_config(tmp_path, data, reward_model_train_steps=2))
    with pytest.raises(ConfigError, match="pass resume=true"):
        train_reward_model(tiny_config(tmp_path, data, reward_model_train_steps=2))
    with pytest.raises(ConfigError, match="preference_dataset=None is invalid"):
        load_config(RewardConfig, None, [])


def _run_cli(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def test_sigkilled_run_resumes_with_identical_metrics(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    common = [
        f"preference_dataset={data}",
        "large_model_reference=tiny-random-llama",
        "reward_model_train_steps=40",
        "batch_size=8",
        "micro_batch_tokens=256",
        "log_every=1",
        "eval_every=8",
        "save_every=4",
        "dtype=fp32",
        "reward_model_learning_rate_multiplier=10",
    ]
    straight = _run_cli(["train-reward", *common, f"output_dir={tmp_path / 'a'}"])
    assert straight.wait(300) == 0, straight.stdout.read().decode()

    killed = _run_cli(["train-reward", *common, f"output_dir={tmp_path / 'b'}"])
    deadline = time.time() + 300
    while not (tmp_path / "b/checkpoints/step-000004/state.pt").exists():
        assert time.time() < deadline and killed.poll() is None
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "b/reward_model").exists()

    resumed = _run_cli(["train-reward", *common, f"output_dir={tmp_path / 'b'}", "resume=true"])
    assert resumed.wait(300) == 0, resumed.stdout.read().decode()

    def strip(rows):
        return [
            {k: v for k, v in r.items() if not k.startswith(("timing/", "pairs_per", "tokens_per"))}
            for r in rows
        ]

    a, b = strip(read_metrics(tmp_path / "a")), strip(read_metrics(tmp_path / "b"))
    # the fitted head's validation (step 0), forty training steps, then the kept weights'
    # held-out evaluation
    assert [r["step"] for r in b] == [0, *range(1, 41), 40]
    assert "eval/accuracy" in b[-1] and "best_step" in b[-1]
    assert a == b


def test_packed_rows_have_no_inner_padding_and_a_mask_that_keeps_answers_apart():
    prompt_ids = torch.tensor([[0, 7, 8]])  # one left pad
    prompt_mask = torch.tensor([[0, 1, 1]])
    response_ids = torch.tensor([[21, 22], [31, 0]])  # two answers; the second has one token
    response_mask = torch.tensor([[1, 1], [1, 0]])
    rows = pack_rows(prompt_ids, prompt_mask, response_ids, response_mask, multiple=3)
    # p1 p2 a1 a2 b1, then one padding token to reach a multiple of 3
    assert rows.ids.tolist() == [[7, 8, 21, 22, 31, 0]]
    assert rows.positions.tolist() == [[0, 1, 2, 3, 2, 0]]  # both answers start at 2
    assert rows.segments.tolist() == [[0, 0, 1, 1, 2, -1]]
    assert rows.prompt_index.tolist() == [[0, 0, 1]]
    assert rows.response_index.tolist() == [[2, 3], [4, 0]]
    mask = packed_mask(rows.segments)[0, 0].int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],  # p1
            [1, 1, 0, 0, 0, 0],  # p2
            [1, 1, 1, 0, 0, 0],  # answer A: the prompt and A so far
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],  # answer B: the prompt and B, never A
            [0, 0, 0, 0, 0, 1],  # padding sees only itself
        ]
    )
    assert torch.equal(mask, expected)


def test_packed_pass_equals_the_key_value_cache_pass_with_gradients():
    spec = RewardModelSpec(base_model="tiny-random-llama")
    model = build_reward_model(spec, dtype="fp32", device="cpu", head_std=0.1)
    assert supports_packing(model.trunk)
    batch = ResponseBatch.build(
        [[5, 6, 7, 8, 9], [11, 12]], [[20, 21, 2], [22, 2], [30, 2], [31, 32, 33, 2]], pad_id=2
    )
    args = (batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    results = []
    for forward in (partial(packed_forward, multiple=4), shared_prompt_forward):
        model.zero_grad(set_to_none=True)
        prompt_hidden, response_hidden = forward(model.trunk, *args)
        real = response_hidden[batch.response_mask.bool()]
        (real.square().mean() + prompt_hidden[batch.prompt_mask.bool()].mean()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((real.detach(), grads))
    (packed, packed_grads), (cached, cached_grads) = results
    torch.testing.assert_close(packed, cached, atol=1e-5, rtol=1e-5)
    assert packed_grads.keys() == cached_grads.keys() and packed_grads
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, cached_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_fitted_head_is_validated_at_step_0_and_kept_when_training_only_hurts(tmp_path):
    data = keyword_preferences(tmp_path / "p.jsonl", 60)
    config = tiny_config(
        tmp_path,
        data,
        head_pooling="mean",
        head_warm_start=True,
        validation_fraction=0.25,
        reward_model_train_steps=3,
        eval_every=3,
        reward_model_learning_rate_multiplier=2000,  # steps of 1.0: training only wrecks it
        warmup_steps=0,
        lr_schedule="constant",
        max_grad_norm=0,
    )
    result = train_reward_model(config)
    rows = read_metrics(result.run_dir)
    assert rows[0]["step"] == 0 and "valid/rank_loss" in rows[0]
    assert [r["step"] for r in rows if "valid/rank_loss" in r] == [0, 3]
    assert result.best_step == 0
    fitted = load_reward_model(result.reward_model_dir, dtype="fp32", device="cpu")
    assert fitted.head.weight.abs().sum() > 0
    assert "step 0: the fitted head" in "\n".join(result_lines(vars(result)))


def test_zero_steps_keeps_the_fitted_head_and_needs_the_warm_start(tmp_path):
    from rlhfkit.errors import ConfigError

    data = keyword_preferences(tmp_path / "p.jsonl", 60)
    with pytest.raises(ConfigError, match="0 only with head_warm_start=true"):
        tiny_config(tmp_path, data, reward_model_train_steps=0, head_warm_start=False)
    with pytest.raises(ConfigError, match="unset num_epochs"):
        tiny_config(tmp_path, data, reward_model_train_steps=0, num_epochs=1)
    config = tiny_config(
        tmp_path, data, reward_model_train_steps=0, head_warm_start=True, head_pooling="mean"
    )
    result = train_reward_model(config)
    assert (result.steps, result.best_step) == (0, 0)
    # no step to choose, so no validation pairs are set aside (the default 0.1 would)
    assert result.validation_pairs == 0 and result.train_pairs + result.eval_pairs == 60
    fitted = load_reward_model(result.reward_model_dir, dtype="fp32", device="cpu")
    assert fitted.head.weight.abs().sum() > 0
    assert result.eval_accuracy > 0.5  # the keyword rule, learned by the fit alone
    assert "fitted on the base model's features alone" in "\n".join(result_lines(vars(result)))


def test_verdict_compares_with_the_better_length_rule():
    from rlhfkit.train.reward_summary import length_rule, verdict

    assert length_rule(0.7) == ("prefer-longer", 0.7)
    assert length_rule(0.25) == ("prefer-shorter", 0.75)

    def stats(accuracy, low, high, longer):
        return {
            "eval/n": 200,
            "eval/accuracy": accuracy,
            "eval/accuracy_ci95_low": low,
            "eval/accuracy_ci95_high": high,
            "eval/longer_baseline_accuracy": longer,
        }

    # beating prefer-longer (0.25) is not enough when prefer-shorter scores 0.75
    assert "not clearly above the better length rule, prefer-shorter (0.750)" in verdict(
        stats(0.78, 0.72, 0.83, 0.25)
    )
    assert "above the better length rule, prefer-longer (0.600)" in verdict(
        stats(0.70, 0.63, 0.76, 0.60)
    )
    assert "below" in verdict(stats(0.55, 0.51, 0.60, 0.30))
    assert "cannot be told from chance" in verdict(stats(0.52, 0.45, 0.59, 0.30))


def test_bad_rows_skip_trains_on_the_valid_pairs_and_lists_the_others(tmp_path):
    from rlhfkit.errors import DatasetError

    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    lines = data.read_text().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), "candidate_0": " "})  # as in TL;DR
    lines[9] = json.dumps({**json.loads(lines[9]), "choice": 3})
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="or set bad_rows=skip"):
        train_reward_model(tiny_config(tmp_path, data, reward_model_train_steps=0))
    config = tiny_config(tmp_path, data, reward_model_train_steps=0, bad_rows="skip")
    result = train_reward_model(config)
    assert result.train_pairs + result.eval_pairs == 38
    listed = [json.loads(line) for line in (result.run_dir / "dropped_rows.jsonl").open()]
    assert [(row["dataset"], row["line"]) for row in listed] == [(str(data), 5), (str(data), 10)]
    assert result.dropped_rows == [
        f"{data}: left out 2 bad row(s) of 40 (bad_rows=skip): 1 x candidate_0 is empty (or "
        "whitespace only); 1 x choice must be 0 or 1 (the index of the preferred candidate) "
        f"(at {data}:5, {data}:10); all listed in {result.run_dir / 'dropped_rows.jsonl'}"
    ]
    printed = result_lines(json.loads((result.run_dir / "summary.json").read_text()))
    assert f"  {result.dropped_rows[0]}" in printed


def test_resume_refuses_other_data_or_settings_and_records_allowed_changes(tmp_path):
    from rlhfkit.errors import ConfigError

    data = keyword_preferences(tmp_path / "p.jsonl", 40)
    base = {"reward_model_train_steps": 4, "save_every": 2, "resume": True}
    train_reward_model(tiny_config(tmp_path, data, **base))
    run = tmp_path / "run"
    # what a kill while writing a checkpoint leaves: removed at the next start
    stale = run / "checkpoints" / ".step-000006.k1ll3d.tmp"
    (stale / "step-000006").mkdir(parents=True)
    # settings that change what the run learns: all listed, nothing trained
    with pytest.raises(ConfigError) as info:
        train_reward_model(tiny_config(tmp_path, data, **base, lora_rank=8, seed=3))
    message = str(info.value)
    assert "the checkpoint at step 4" in message
    assert "lora_rank: 4 -> 8" in message and "seed: 0 -> 3" in message
    assert "reward_model_train_steps" not in message
    assert not stale.exists()
    # the same settings on other data
    other = keyword_preferences(tmp_path / "other.jsonl", 40, seed=1)
    data.write_bytes(other.read_bytes())
    with pytest.raises(ConfigError, match="the dataset files differ"):
        train_reward_model(tiny_config(tmp_path, data, **base))
    keyword_preferences(data, 40)  # the original rows again
    # more steps and another logging cadence: allowed, and recorded
    result = train_reward_model(
        tiny_config(tmp_path, data, **{**base, "reward_model_train_steps": 6, "log_every": 2})
    )
    assert result.steps == 6
    records = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert records == [
        {"step": 4, "changed": {"log_every": [1, 2], "reward_model_train_steps": [4, 6]}}
    ]


def test_check_resume_ignores_settings_added_since_and_file_names(tmp_path):
    from rlhfkit.data.formats import load_preferences
    from rlhfkit.errors import ConfigError
    from rlhfkit.train.resume import check_resume, data_digest

    data = keyword_preferences(tmp_path / "p.jsonl", 4)
    digest = data_digest({"a": load_preferences(data)})
    # the same file by another spelling of its path is the same data
    assert data_digest({"b": load_preferences(tmp_path / "." / "p.jsonl")}) == digest
    old = {"seed": 0, "lora_rank": 4}  # a checkpoint from before bad_rows existed
    state = {"step": 2, "extra": {"config": old, "data": digest}}
    check_resume(state, {**old, "bad_rows": "error"}, digest, tmp_path)
    assert not (tmp_path / "resumes.jsonl").exists()
    with pytest.raises(ConfigError, match="lora_rank: 4 -> 8"):
        check_resume(state, {**old, "lora_rank": 8, "bad_rows": "error"}, digest, tmp_path)
