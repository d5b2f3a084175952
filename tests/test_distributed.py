"""Data-parallel training on two CPU processes (gloo), started by `rlhfkit launch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_rl_train import tiny_args

TOPICS = ["rain", "tea", "owls", "maps", "salt", "glass", "bees", "snow", "sand", "wind"]
TOPICS += ["fire", "moss", "iron", "milk", "silk", "clay", "reed", "wool", "jade", "tide"]


def launch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rlhfkit.cli", "launch", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def preference_file(tmp_path: Path) -> Path:
    rows = [
        {
            "input_text": f"What is {topic}? " + "Say it plainly. " * (i % 4),
            "candidate_0": f"{topic} is a thing we know well, number {i}.",
            "candidate_1": f"No idea about {topic}.",
            "choice": i % 2,
        }
        for i, topic in enumerate(TOPICS)
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_args(tmp_path: Path, run: str, **overrides) -> list[str]:
    values = {
        "preference_dataset": preference_file(tmp_path),
        "large_model_reference": "tiny-random-llama",
        "reward_model_train_steps": 4,
        "batch_size": 8,
        # small micro-batches: each rank accumulates several before DDP averages
        "micro_batch_tokens": 96,
        "dtype": "fp32",
        "head_init_std": 0.5,
        "log_every": 1,
        "eval_every": 2,
        "eval_fraction": 0.15,
        "output_dir": tmp_path / run,
    }
    values.update(overrides)
    return [f"{k}={v}" for k, v in values.items()]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_of_four_pairs_train_like_one_process_of_eight(tmp_path):
    one = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "train-reward", *reward_args(tmp_path, "one")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr
    two = launch("nproc=2", "train-reward", *reward_args(tmp_path, "two"))
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes" in two.stdout and "[rank 1]" not in two.stderr
    # the same through accelerate's launcher and the shipped DDP config
    config = Path(__file__).resolve().parent.parent / "examples" / "accelerate" / "ddp.yaml"
    accelerate = subprocess.run(
        [
            *[sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)],
            *["--num_processes", "2", "-m", "rlhfkit.cli", "train-reward"],
            *reward_args(tmp_path, "accelerate"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert accelerate.returncode == 0, accelerate.stdout + accelerate.stderr
    rows_one, rows_two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r.get("rank_loss") for r in metrics(tmp_path / "accelerate")] == [
        r.get("rank_loss") for r in rows_two
    ]
    # rank 0 alone wrote them: the fitted head's validation (the ranks computed the
    # features of half the pairs each), four training steps, then the held-out evaluation
    assert [r["step"] for r in rows_two] == [0, 1, 2, 3, 4, 4]
    assert "eval/accuracy" in rows_two[-1] and "rank_loss" not in rows_two[-1]
    # tolerance: the same sums in another order (fp32), and other padding widths per rank
    for a, b in zip(rows_one, rows_two, strict=True):
        for key in ("rank_loss", "accuracy", "margin", "grad_norm", "eval/rank_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=2e-5), (a["step"], key)
    assert rows_one[-2]["rank_loss"] != rows_one[1]["rank_loss"]  # it did train
    weights_one = load_file(next((tmp_path / "one" / "reward_model").rglob("*.safetensors")))
    weights_two = load_file(next((tmp_path / "two" / "reward_model").rglob("*.safetensors")))
    assert weights_one.keys() == weights_two.keys() and weights_one
    for name, value in weights_one.items():
        assert torch.allclose(value, weights_two[name], atol=2e-5), name
    summary_one = json.loads((tmp_path / "one" / "summary.json").read_text())
    summary_two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary_two["eval_accuracy"] == pytest.approx(summary_one["eval_accuracy"])


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
                frontier.append(int(entry.name))
    return found


def rank_pid(launcher: int, rank: int) -> int | None:
    for pid in descendants(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(rank).encode() in environ:
            return pid
    return None


def test_a_dying_rank_stops_the_run_cleanly_and_it_resumes_on_one_process(
    tmp_path, tiny_reward_model
):
    args = tiny_args(
        tmp_path,
        tiny_reward_model,
        reinforcement_learning_train_steps=400,
        save_every=1,
        eval_every=1000,
        sample_every=1000,
    )
    command = [sys.executable, "-m", "rlhfkit.cli", "launch", "nproc=2", "train-rl", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run"
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "step-000003").exists():
        time.sleep(0.1)
    victim = rank_pid(proc.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - killed_at < 60  # no hang on the collective rank 0 was waiting in
    assert proc.returncode == 1
    assert "rlhfkit launch: rank 1 was killed by SIGKILL\n" in err
    assert "the launcher then stopped the other ranks (0)" in err
    assert "run the same command with resume=true" in err
    assert "Traceback" not in err, err
    saved = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    last = int(saved[-1].split("-")[1])
    assert 3 <= last < 400
    # continue on one process (another world size) from the last checkpoint
    done = subprocess.run(
        [
            *[sys.executable, "-m", "rlhfkit.cli", "train-rl", *args],
            *["resume=true", f"reinforcement_learning_train_steps={last + 2}"],
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming from {run / 'checkpoints' / saved[-1]} (step {last})" in done.stderr
    steps = [r["step"] for r in metrics(run)]
    assert steps == sorted(set(steps)) and steps[-1] == last + 2


def test_launch_mistakes_get_a_message_not_a_hang(tmp_path):
    uneven = launch("nproc=2", "train-reward", *reward_args(tmp_path, "uneven", batch_size=3))
    assert uneven.returncode == 2
    assert "batch_size=3 does not split over 2 processes" in uneven.stderr
    assert "fix the problem the rank printed above" in uneven.stderr
    assert not (tmp_path / "uneven" / "checkpoints").exists()
    assert launch("train-reward").returncode == 2
    wrong = launch("nproc=2", "run")
    assert wrong.returncode == 2 and "runs train-reward or train-rl, not run" in wrong.stderr


WHITEN_SCRIPT = """
import torch
from rlhfkit.algorithms.ppo import masked_whiten
from rlhfkit.train.parallel import Parallel, leave_process_group, whiten

parallel = Parallel("cpu")
generator = torch.Generator().manual_seed(0)
values = torch.randn(8, 5, generator=generator) * 3 + 1
mask = (torch.rand(8, 5, generator=generator) > 0.3).float()
mine = whiten(
    parallel, torch.stack(parallel.shard(list(values))), torch.stack(parallel.shard(list(mask)))
)
together = torch.cat(parallel.gather([mine]))
expected = masked_whiten(values, mask)
assert torch.allclose(together, expected, atol=1e-5), (together - expected).abs().max()
stats = parallel.reduce({"x": float(parallel.rank), "pairs_per_second": 1.5})
assert stats == {"x": 0.5, "pairs_per_second": 3.0}, stats
if parallel.is_main:
    print("WHITEN OK")
leave_process_group()
"""


def test_ppo_advantages_are_whitened_over_every_ranks_answers(tmp_path):
    script = tmp_path / "whiten.py"
    script.write_text(WHITEN_SCRIPT)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WHITEN OK" in done.stdout


def test_grpo_on_two_ranks_samples_its_groups_per_rank_and_writes_once(tmp_path):
    from test_grpo_train import tiny_grpo_args

    args = tiny_grpo_args(tmp_path, batch_size=4, mini_batch_size=8, eval_interval=2)
    done = launch("nproc=2", "train-rl", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "run"
    rows = metrics(run)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[0] == 0  # one writer, no repeated lines
    trained = [r for r in rows if "train_reward_mean" in r]
    assert trained and all(r["tokens_per_second"] > 0 for r in trained)
    assert "valid_reward_mean" in rows[-1]
    assert (run / "policy").is_dir() and (run / "summary.json").is_file()
    odd = launch("nproc=2", "train-rl", *tiny_grpo_args(tmp_path, batch_size=3))
    assert odd.returncode == 2 and "batch_size=3 does not split over 2" in odd.stderr


# ---------------------------------------------------------------- sharded engines

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accelerate"


def accelerate_launch(config: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(EXAMPLES / config), "--num_processes", "2"]
    command += ["-m", "rlhfkit.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    """Reward-model training in one process, the reference for every engine."""
    tmp_path = tmp_path_factory.mktemp("one")
    args = reward_args(tmp_path, "one", save_every=2)
    done = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "train-reward", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return tmp_path / "one"


def assert_same_training(reference: list[dict], rows: list[dict]) -> None:
    # tolerance: the same sums in another order and split (fp32)
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for a, b in zip(reference, rows, strict=True):
        for key in ("rank_loss", "accuracy", "margin", "grad_norm", "eval/rank_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=2e-5), (a["step"], key)


def reward_weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted((run / "reward_model").rglob("*.safetensors")):
        out.update({f"{file.name}:{k}": v for k, v in load_file(file).items()})
    return out


@pytest.mark.parametrize(
    ("sharding", "how", "resume_with"),
    [
        ("fsdp", "accelerate", "zero3"),  # FSDP's checkpoint resumed by ZeRO-3 ranks
        ("zero2", "launch", "fsdp"),
        ("zero3", "accelerate", "one process"),
    ],
)
def test_sharded_ranks_train_like_one_process_and_resume_under_any_engine(
    tmp_path, one_process_run, sharding, how, resume_with
):
    args = reward_args(tmp_path, "run", save_every=2)
    if how == "accelerate":  # the shipped configuration chooses the engine
        done = accelerate_launch(f"{sharding}.yaml", "train-reward", *args)
    else:
        done = launch("nproc=2", "train-reward", *args, f"sharding={sharding}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"data-parallel over 2 processes (gloo), sharding={sharding}" in done.stderr
    reference = metrics(one_process_run)
    assert_same_training(reference, metrics(tmp_path / "run"))
    expected = reward_weights(one_process_run)
    got = reward_weights(tmp_path / "run")
    assert got.keys() == expected.keys() and len(expected) > 2
    for name, value in expected.items():
        assert torch.allclose(value, got[name], atol=2e-5), name
    # resume from the step-2 checkpoint under another engine: steps 3 and 4 as before
    run = tmp_path / "run"
    for path in [run / "checkpoints" / "step-000004", run / "reward_model"]:
        subprocess.run(["rm", "-rf", str(path)], check=True)
    again = [*args, "resume=true"]
    if resume_with == "one process":
        done = subprocess.run(
            [sys.executable, "-m", "rlhfkit.cli", "train-reward", *again],
            capture_output=True,
            text=True,
            timeout=600,
        )
    else:
        done = launch("nproc=2", "train-reward", *again, f"sharding={resume_with}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(step 2)" in done.stderr
    assert_same_training(reference, metrics(run))
    got = reward_weights(run)
    for name, value in expected.items():
        assert torch.allclose(value, got[name], atol=2e-5), name


def policy_weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted((run / "policy").glob("*.safetensors")):
        out.update({f"{file.name}:{k}": v for k, v in load_file(file).items()})
    return out


def test_ppo_under_fsdp_and_zero3_matches_ddp(tmp_path, tiny_reward_model):
    """Generation, the reference and reward passes run on gathered weights; the update's
    forward and backward on shards: the same run as plain DDP."""
    runs = {}
    for sharding in ("none", "fsdp", "zero3"):
        args = tiny_args(tmp_path, tiny_reward_model, output_dir=tmp_path / sharding)
        done = launch("nproc=2", "train-rl", *args, f"sharding={sharding}")
        assert done.returncode == 0, done.stdout + done.stderr
        runs[sharding] = metrics(tmp_path / sharding)
    keys = ("policy/loss", "value/loss", "grad_norm", "objective/kl", "eval/reward")
    for sharding in ("fsdp", "zero3"):
        for a, b in zip(runs["none"], runs[sharding], strict=True):
            for key in keys:
                if key in a:
                    assert b[key] == pytest.approx(a[key], abs=2e-5), (sharding, a["step"], key)
        expected, got = policy_weights(tmp_path / "none"), policy_weights(tmp_path / sharding)
        assert got.keys() == expected.keys() and expected
        for name, value in expected.items():
            assert torch.allclose(value, got[name], atol=2e-5), (sharding, name)
    assert any("grad_norm" in r and r["grad_norm"] > 0 for r in runs["none"])


def test_sharding_settings_that_disagree_or_do_not_exist_get_a_message(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true"}
    env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] = "2"
    args = reward_args(tmp_path, "clash", sharding="fsdp")
    clash = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "train-reward", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert clash.returncode == 2
    assert "sharding=fsdp but the accelerate configuration asks for zero2" in clash.stderr
    unknown = launch("nproc=2", "train-reward", *reward_args(tmp_path, "x", sharding="zero4"))
    assert unknown.returncode == 2 and "zero4" in unknown.stderr and "zero3" in unknown.stderr
