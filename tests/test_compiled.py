import os
import subprocess
import sys

import pytest
import torch

from rlhfkit.errors import ConfigError
from rlhfkit.models.compiled import AUTO_MIN_STEPS, is_compiled, resolve_compile
from rlhfkit.models.loading import decoder_blocks
from rlhfkit.tracking import read_metrics
from rlhfkit.train.reward import RewardTrainer
from test_reward_train import keyword_preferences, tiny_config

CPU = torch.device("cpu")


def test_compile_is_chosen_only_where_it_pays_and_can_work():
    assert resolve_compile(False, CPU, "none", 10_000) is False
    assert resolve_compile(None, CPU, "none", AUTO_MIN_STEPS - 1) is False  # too short to pay
    assert resolve_compile(None, torch.device("cuda"), "none", 10_000) is False
    assert resolve_compile(None, CPU, "fsdp", 10_000) is False
    assert resolve_compile(None, CPU, "none", AUTO_MIN_STEPS) is True  # this machine compiles
    assert resolve_compile(True, CPU, "none", 1) is True
    with pytest.raises(ConfigError, match="compile=true works with sharding=none"):
        resolve_compile(True, CPU, "zero3", 10)


def test_compiled_training_equals_eager_training(tmp_path):
    """Compiled decoder blocks give the eager run's losses and weights; evaluation and
    scoring (no gradients) run the same blocks eagerly."""
    data = keyword_preferences(tmp_path / "p.jsonl", 24)
    runs = {}
    for setting in (False, True):
        config = tiny_config(
            tmp_path / str(setting),
            data,
            reward_model_train_steps=4,
            eval_every=4,
            save_every=4,
            reward_model_learning_rate_multiplier=10,
            head_init_std=0.02,
            compile=setting,
        )
        trainer = RewardTrainer(config)
        blocks = decoder_blocks(trainer.model)
        assert blocks and all(is_compiled(b) for b in blocks) == setting
        trainer.run()
        rows = read_metrics(trainer.run_dir)
        params = {n: p.detach().clone() for n, p in trainer.params.items()}
        runs[setting] = ([r["rank_loss"] for r in rows if "rank_loss" in r], rows[-1], params)
    (eager_loss, eager_last, eager_w), (comp_loss, comp_last, comp_w) = runs[False], runs[True]
    assert comp_loss == pytest.approx(eager_loss, abs=2e-5)
    assert comp_last["eval/rank_loss"] == pytest.approx(eager_last["eval/rank_loss"], abs=2e-5)
    assert eager_loss[-1] < eager_loss[0]
    # the loss depends on reward differences only, so the head's bias gets a gradient of
    # rounding noise, which AdamW scales up to full-size steps either way: not compared
    for name, weight in eager_w.items():
        if name.endswith("head.bias"):
            continue
        torch.testing.assert_close(comp_w[name], weight, atol=2e-5, rtol=1e-4)


def test_a_machine_that_cannot_compile_gets_a_clear_error_or_a_warning(tmp_path):
    """With no working C++ compiler, compile=true names the problem and the fix, and an
    unset compile falls back to eager with a warning."""
    script = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from rlhfkit.errors import ConfigError\n"
        "from rlhfkit.models.compiled import resolve_compile\n"
        "print('auto ->', resolve_compile(None, torch.device('cpu'), 'none', 1000))\n"
        "try:\n"
        "    resolve_compile(True, torch.device('cpu'), 'none', 1000)\n"
        "except ConfigError as exc:\n"
        "    print('error:', exc)\n"
    )
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-compiler"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),  # nothing cached to reuse
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "auto -> False" in done.stdout
    assert "training runs uncompiled: torch.compile cannot build code here" in done.stderr
    assert "compile=true, but torch.compile cannot build code on this machine" in done.stdout
    assert "install a C++ compiler" in done.stdout and "set compile=false" in done.stdout


def test_compiled_rl_equals_eager_and_runs_whole_sequence_passes_compiled(tmp_path):
    """GRPO with compiled blocks: the update passes, the old policy's and the reference's
    passes (no gradients) run compiled, packed without a key/value cache; sampling and
    scoring on a cache run eagerly; the run's figures equal the eager run's."""
    from test_grpo_train import tiny_trainer

    runs = {}
    for setting in (False, True):
        (tmp_path / str(setting)).mkdir()
        trainer = tiny_trainer(
            tmp_path / str(setting), compile=setting, kl_coeff=0.05, epochs_per_batch=2
        )
        blocks = decoder_blocks(trainer.policy.backbone)
        assert trainer.compiled is setting and trainer.policy.packed is setting
        assert all(is_compiled(b) for b in blocks) is setting
        calls = {"compiled": [], "eager": 0}
        if setting:
            for block in blocks:
                compiled, eager = block.forward.compiled, block.forward.eager

                def counted_compiled(*args, _fn=compiled, _calls=calls, **kwargs):
                    _calls["compiled"].append(torch.is_grad_enabled())
                    return _fn(*args, **kwargs)

                def counted_eager(*args, _fn=eager, _calls=calls, **kwargs):
                    _calls["eager"] += 1
                    return _fn(*args, **kwargs)

                block.forward.compiled, block.forward.eager = counted_compiled, counted_eager
        trainer.run()
        rows = [r for r in read_metrics(trainer.run_dir) if "train_reward_mean" in r]
        runs[setting] = rows
        if setting:
            assert True in calls["compiled"] and False in calls["compiled"]
            assert calls["eager"] > 0  # sampling
    eager, compiled = runs[False], runs[True]
    assert len(eager) == len(compiled) > 0
    for a, b in zip(eager, compiled, strict=True):
        assert b["train_reward_mean"] == pytest.approx(a["train_reward_mean"], abs=1e-6)
        assert b["policy/loss"] == pytest.approx(a["policy/loss"], abs=1e-4)
        assert b["objective/kl"] == pytest.approx(a["objective/kl"], abs=1e-4)
