"""bench/gpu_check.py --tiny: the GPU check's every part runs on the CPU before a GPU is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_gpu_check_runs_every_part_on_the_cpu_with_a_tiny_model(tmp_path):
    output = tmp_path / "gpu_check.json"
    command = [sys.executable, str(BENCH / "gpu_check.py"), "--tiny"]
    command += ["--output", str(output), "--workdir", str(tmp_path / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    parts = json.loads(output.read_text())["parts"]
    assert set(parts) == {
        "machine",
        "tiny/build",
        "tiny/reward",
        "tiny/ppo",
        "tiny/grpo",
        "tiny/sample",
        "launch/none",
        "launch/fsdp",
    }
    assert (
        parts["machine"]["fp32_matmul_tflops"] > 0 and parts["machine"]["copy_bandwidth_gb_s"] > 0
    )
    assert parts["tiny/build"]["parameters"] > parts["tiny/build"]["trunk_parameters"] > 0
    reward = parts["tiny/reward"]
    assert reward["steps"] == 2 and reward["tokens_per_second"] > 0
    assert 0 < reward["fraction_of_measured_matmul_peak"] < 1
    for method, phases in (("ppo", {"rollout", "update"}), ("grpo", {"sampling", "training"})):
        figures = parts[f"tiny/{method}"]
        assert figures["steps"] == 2 and figures["steps_per_second"] > 0
        assert phases <= set(figures["phase_seconds"])
    sample = parts["tiny/sample"]
    assert sample["batch"] == 4 and sample["tokens_per_second"] > 0
    assert sample["fraction_of_bandwidth_bound"] > 0
    # one process started by the launcher joins a process group and steps through the engine
    for sharding in ("none", "fsdp"):
        launched = parts[f"launch/{sharding}"]
        assert launched["ok"] and launched["process_group_backend"] == "gloo"
        assert launched["steps"] == 2
