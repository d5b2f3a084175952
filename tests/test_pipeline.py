"""`rlhfkit run` / `rlhf_pipeline` on the tiny model: the stages, their skipping, resuming
and redoing by hash, validation before training, and `rlhfkit data synth`."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfkit.cli import main

TOPICS = ("rain", "tea", "owls", "maps", "salt", "glass", "bees", "snow", "moss", "iron")
SHORT_GRADER = (
    "type: python\nname: short\nsource: |\n"
    "  def grade(sample, item):\n"
    "      return 1.0 / (1 + len(sample['output_text']))\n"
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def inputs(tmp_path) -> dict[str, str]:
    prefs = [
        {
            "input_text": f"What is {t}?",
            "candidate_0": f"{t} is nice.",
            "candidate_1": f"I do not know {t}.",
            "choice": 0,
        }
        for t in TOPICS
    ]
    prompts = [{"input_text": f"Tell me about {t}.", "topic": t} for t in TOPICS * 2]
    evals = [{"id": f"e{i}", "input_text": f"Describe {t}."} for i, t in enumerate(TOPICS[:3])]
    grader = tmp_path / "short.yaml"
    grader.write_text(SHORT_GRADER)
    return {
        "preference_dataset": str(write_jsonl(tmp_path / "prefs.jsonl", prefs)),
        "prompt_dataset": str(write_jsonl(tmp_path / "prompts.jsonl", prompts)),
        "eval_dataset": str(write_jsonl(tmp_path / "eval.jsonl", evals)),
        "grader": str(grader),
    }


def tiny_args(inputs: dict[str, str], run: Path, **more) -> list[str]:
    values = {
        **inputs,
        "large_model_reference": "tiny-random-llama",
        "reward_model_train_steps": 2,
        "reinforcement_learning_train_steps": 2,
        "target_sequence_length": 6,
        "output_dir": str(run),
        "reward_model_options.batch_size": 4,
        "reward_model_options.dtype": "fp32",
        "rl_options.batch_size": 4,
        "rl_options.micro_batch_size": 4,
        "rl_options.ppo_mini_batch_size": 4,
        "rl_options.dtype": "fp32",
        **more,
    }
    return [f"{k}={v}" for k, v in values.items()]


def stage_starts(run: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["started"] for p in run.glob("*/stage.json")}


def test_pipeline_runs_every_stage_then_skips_redoes_and_forces(tmp_path, inputs, capsys):
    run = tmp_path / "run"
    assert main(["run", *tiny_args(inputs, run)]) == 0
    out = capsys.readouterr().out
    for stage in ("import", "reward_model", "rl", "infer", "sxs"):
        assert f"== stage {stage}" in out
        assert re.search(rf"== stage {stage} done in \d+ min \d+ s", out), out
    assert "by reward_model:" in out and "by grader:" in out
    for path in (
        "config.yaml",
        "data/preferences.jsonl",
        "data/prompts.jsonl",
        "data/eval.jsonl",
        "reward_model/reward_model",
        "rl/policy",
        "rl/model",
        "infer/base.jsonl",
        "infer/tuned.jsonl",
        "sxs/reward_model/judgments.jsonl",
        "sxs/grader/metrics.json",
        "report.html",
        "summary.json",
    ):
        assert (run / path).exists(), path
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"] == {
        "preference_pairs": 10,
        "eval_kind": "prompt",
        "train_prompts": 20,
        "eval_rows": 3,
    }
    assert summary["rl"]["steps"] == 2 and summary["report"].endswith("report.html")
    assert summary["rl"]["method"] == "ppo"
    assert summary["rl"]["reward"] == f"reward_model:{run / 'reward_model' / 'reward_model'}"
    assert summary["side_by_side"]["grader"]["n"] == 3
    tuned = [json.loads(x) for x in (run / "infer" / "tuned.jsonl").read_text().splitlines()]
    assert [r["id"] for r in tuned] == ["e0", "e1", "e2"]
    first = stage_starts(run)

    # nothing changed: every stage is skipped
    assert main(["run", *tiny_args(inputs, run)]) == 0
    assert "== stage" not in capsys.readouterr().out
    assert stage_starts(run) == first

    # an RL parameter changed: RL and everything after it run again, the rest is kept
    assert main(["run", *tiny_args(inputs, run, reinforcement_learning_train_steps=3)]) == 0
    again = stage_starts(run)
    assert {s for s in first if again[s] != first[s]} == {"rl", "infer", "sxs"}
    assert json.loads((run / "summary.json").read_text())["rl"]["steps"] == 3

    # --from-stage forces that stage and the ones after it
    args = tiny_args(inputs, run, reinforcement_learning_train_steps=3)
    assert main(["run", "--from-stage", "sxs", *args]) == 0
    forced = stage_starts(run)
    assert {s for s in again if forced[s] != again[s]} == {"sxs"}

    # an input file changed: everything runs again
    Path(inputs["prompt_dataset"]).write_text(
        Path(inputs["prompt_dataset"]).read_text() + '{"input_text": "One more?"}\n'
    )
    assert main(["run", *args]) == 0
    assert all(stage_starts(run)[s] != forced[s] for s in forced)


def test_invalid_inputs_are_all_listed_before_anything_runs(tmp_path, inputs, capsys):
    Path(inputs["preference_dataset"]).write_text('{"input_text": "x", "candidate_0": "a"}\n')
    bad_grader = tmp_path / "bad.yaml"
    bad_grader.write_text("type: formula_of_doom\nname: x\n")
    run = tmp_path / "run"
    args = tiny_args(
        {**inputs, "prompt_dataset": str(tmp_path / "missing.jsonl"), "grader": str(bad_grader)},
        run,
        **{"rl_options.ppo_epochz": 2, "reward_model_options.lora_rank": "many"},
    )
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert "cannot start: 5 problem(s)" in err, err
    for text in ("prefs.jsonl:1", "missing.jsonl", "formula_of_doom", "ppo_epochz", "lora_rank"):
        assert text in err, (text, err)
    assert "Traceback" not in err
    assert not run.exists()


def test_rlhf_pipeline_function_grpo_with_a_grader_and_preference_eval(tmp_path, inputs):
    from rlhfkit import rlhf_pipeline

    # a preference eval_dataset evaluates the reward model; its prompts are the eval prompts
    eval_prefs = write_jsonl(
        tmp_path / "eval_prefs.jsonl",
        [
            {"input_text": f"Is {t} good?", "candidate_0": "Yes.", "candidate_1": "No", "choice": 0}
            for t in TOPICS[:4]
        ],
    )
    result = rlhf_pipeline(
        preference_dataset=inputs["preference_dataset"],
        prompt_dataset=inputs["prompt_dataset"],
        eval_dataset=str(eval_prefs),
        large_model_reference="tiny-random-llama",
        method="grpo",
        grader=inputs["grader"],
        reward_model_train_steps=2,
        reinforcement_learning_train_steps=2,
        target_sequence_length=6,
        output_dir=str(tmp_path / "run"),
        project="my-project",  # a Vertex AI notebook's cloud parameters run unchanged
        deploy_model=True,
        reward_model_options={"batch_size": 4, "dtype": "fp32"},
        rl_options={
            "batch_size": 2,
            "compute_multiplier": 2,
            "micro_batch_size": 4,
            "dtype": "fp32",
        },
    )
    summary = result.summary
    assert summary["data"]["eval_kind"] == "preference"
    assert summary["reward_model"]["eval_pairs"] == 4
    assert summary["rl"]["steps"] == 2
    assert summary["rl"]["reward"] == f"grader:{inputs['grader']}"  # grpo's default with a grader
    assert set(summary["side_by_side"]) == {"reward_model", "grader"}
    assert summary["side_by_side"]["grader"]["n"] == 4
    assert result.report.is_file()


def test_vertex_cloud_parameters_are_accepted_each_named_once_as_ignored(inputs, caplog):
    from rlhfkit.errors import ConfigError
    from rlhfkit.pipeline import load_pipeline_config

    cloud = {
        "deploy_model": True,
        "project": "my-project",
        "location": "us-central1",
        "accelerator_type": "NVIDIA_TESLA_A100",
        "tensorboard_resource_id": "projects/1/locations/us-central1/tensorboards/2",
        "encryption_spec_key_name": "projects/1/locations/global/keyRings/r/cryptoKeys/k",
    }
    with caplog.at_level("WARNING", logger="rlhfkit.pipeline.config"):
        config = load_pipeline_config(None, {**inputs, **cloud})
    assert config == load_pipeline_config(None, inputs)
    lines = [record.getMessage() for record in caplog.records]
    assert sorted(line.split(":")[0] for line in lines) == sorted(cloud)
    assert all("no local meaning, ignored (" in line for line in lines)
    assert any("tensorboard --logdir" in line for line in lines)
    # a key that is neither rlhfkit's nor Vertex AI's is still refused, with the valid ones
    with pytest.raises(ConfigError, match=r"unknown parameter 'projekt'.*valid: "):
        load_pipeline_config(None, {**inputs, "projekt": "my-project"})


def test_rlhf_pipeline_has_a_typed_keyword_per_parameter_generated_from_the_config():
    import dataclasses
    import inspect

    from rlhfkit import rlhf_pipeline
    from rlhfkit.pipeline import PipelineConfig
    from rlhfkit.pipeline.config import CLOUD_PARAMETERS
    from rlhfkit.pipeline.signature import ENTRY_FILE, render

    assert ENTRY_FILE.read_text() == render(), "run: python -m rlhfkit.pipeline.signature"
    parameters = inspect.signature(rlhf_pipeline).parameters
    names = [f.name for f in dataclasses.fields(PipelineConfig)]
    assert list(parameters) == [*names, *CLOUD_PARAMETERS, "other"]
    assert parameters["other"].kind == parameters["other"].VAR_KEYWORD
    steps = parameters["reward_model_train_steps"]
    assert (steps.kind, steps.annotation, steps.default) == (steps.KEYWORD_ONLY, "int", 1000)
    assert parameters["kl_coeff"].annotation == "float | None"
    assert "reward_model_train_steps: Reward-model optimizer steps" in rlhf_pipeline.__doc__
    # a key that is no parameter is refused with the valid ones, not a bare TypeError
    from rlhfkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown parameter 'reward_lora_dim'.*valid: "):
        rlhf_pipeline(reward_lora_dim=4)


def test_a_killed_pipeline_continues_its_interrupted_stage(tmp_path, inputs):
    run = tmp_path / "run"
    args = tiny_args(
        inputs,
        run,
        reinforcement_learning_train_steps=40,
        **{"rl_options.save_every": 1, "rl_options.eval_every": 100},
    )
    command = [sys.executable, "-m", "rlhfkit.cli", "run", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    checkpoints = run / "rl" / "checkpoints"
    while time.time() < deadline and not (
        checkpoints.exists() and len(list(checkpoints.glob("step-*"))) >= 1
    ):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((run / "rl" / "stage.json").read_text())["status"] == "running"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== stage rl (continuing)" in done.stdout
    assert "resuming from" in done.stderr
    assert "== stage reward_model" not in done.stdout  # finished before the kill: kept
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rl"]["steps"] == 40


def test_data_synth_labels_pairs_with_a_grader(tmp_path, inputs, capsys):
    out = tmp_path / "synth.jsonl"
    args = [
        "data",
        "synth",
        f"prompt_dataset={inputs['prompt_dataset']}",
        f"out={out}",
        "large_model_reference=tiny-random-llama",
        f"grader={inputs['grader']}",
        "target_sequence_length=8",
        "dtype=fp32",
    ]
    assert main(args) == 0
    assert "preference pairs from 20 prompts" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows and not Path(f"{out}.candidates").exists()
    for row in rows:
        chosen = row[f"candidate_{row['choice']}"]
        other = row[f"candidate_{1 - row['choice']}"]
        assert len(chosen) < len(other)  # the grader prefers the shorter answer
        assert row["label_source"] == f"grader:{inputs['grader']}"
        assert row["grades"][row["choice"]] > row["grades"][1 - row["choice"]]
        assert row["topic"] in row["input_text"]
    # the file is a preference dataset train-reward reads
    from rlhfkit.data.formats import load_preferences

    assert len(load_preferences(out)) == len(rows)
    assert main(["data", "synth", f"prompt_dataset={out}", "out=x.jsonl"]) == 2
    assert "exactly one labeller" in capsys.readouterr().err


def test_rl_reward_picks_what_rl_maximises_and_the_grader_stays_a_judge(tmp_path, inputs):
    from rlhfkit.errors import ConfigError
    from rlhfkit.pipeline import load_pipeline_config, plan

    def planned(**values):
        settings = {**inputs, "large_model_reference": "tiny-random-llama", **values}
        problems: list[str] = []
        result = plan(load_pipeline_config(None, settings), False, problems)
        assert problems == []
        return result

    auto = planned(method="rloo")  # auto: grpo / rloo maximise the grader when there is one
    assert auto.rl.grader == inputs["grader"] and auto.rl.reward_model is None
    learned = planned(method="rloo", rl_reward="reward_model")
    assert learned.rl.grader is None and learned.rl.reward_model.endswith("reward_model")
    assert set(learned.autoraters) == {"reward_model", "grader"}  # an independent judge
    ppo = planned(method="ppo", rl_reward="grader")
    assert ppo.rl.grader == inputs["grader"] and ppo.rl.reward_model is None
    assert planned(method="ppo").rl.reward_model is not None
    without = {k: v for k, v in inputs.items() if k != "grader"}
    with pytest.raises(ConfigError, match="grader needs a grader file"):
        load_pipeline_config(None, {**without, "rl_reward": "grader"})
    without = {k: v for k, v in inputs.items() if k != "preference_dataset"}
    with pytest.raises(ConfigError, match="preference_dataset=None is invalid"):
        load_pipeline_config(None, {**without, "method": "rloo", "rl_reward": "reward_model"})
    assert load_pipeline_config(None, {**without, "rl_reward": "grader"}).reward_source == "grader"


def test_each_method_has_one_kl_default_and_its_own_names_from_run_and_train_rl(inputs):
    from rlhfkit.pipeline import load_pipeline_config, plan
    from rlhfkit.train.methods import load_rl_config, method

    for name, kl, steps_name in (
        ("ppo", 0.1, "reinforcement_learning_train_steps"),
        ("grpo", 0.0, "train_steps"),
        ("rloo", 0.0, "train_steps"),
    ):
        settings = {**inputs, "large_model_reference": "tiny-random-llama", "method": name}
        problems: list[str] = []
        planned = plan(load_pipeline_config(None, settings), False, problems)
        assert problems == []
        direct = load_rl_config(
            None,
            {
                "method": name,
                "prompt_dataset": inputs["prompt_dataset"],
                "grader": inputs["grader"],
            },
        )
        assert planned.rl.kl_coeff == direct.kl_coeff == method(name).kl_coeff == kl
        # the pipeline's Vertex AI names arrive as the method's own
        assert (
            getattr(planned.rl, steps_name)
            == load_pipeline_config(None, settings).reinforcement_learning_train_steps
        )
    chosen = load_pipeline_config(None, {**inputs, "method": "grpo", "kl_coeff": 0.05})
    assert plan(chosen, False, []).rl.kl_coeff == 0.05  # a value given wins


def test_the_demo_config_plans_rloo_on_the_reward_model_judged_by_its_grader():
    from rlhfkit.pipeline import load_pipeline_config, plan

    demo = Path(__file__).resolve().parent.parent / "examples" / "demo" / "pipeline.yaml"
    config = load_pipeline_config(demo, {"large_model_reference": "tiny-random-llama"})
    problems: list[str] = []
    stages = plan(config, False, problems)
    assert problems == []
    assert stages.reward.reward_model_train_steps == 0 and stages.reward.head_warm_start
    assert stages.rl.method == "rloo" and stages.rl.grader is None
    assert stages.rl.reward_model.endswith("reward_model")
    assert set(stages.autoraters) == {"reward_model", "grader"}


def test_noisy_labels_flip_close_pairs_often_and_clear_pairs_almost_never():
    from rlhfkit.eval.synth import noisy_labels

    def rows(gap):
        return [{"grades": [0.5 + gap, 0.5], "choice": 0, "label_source": "g"}] * 2000

    close, clear = noisy_labels(rows(0.0), 0.15, 0), noisy_labels(rows(0.9), 0.15, 0)
    assert 0.45 < sum(r["choice"] == 0 for r in close) / 2000 < 0.55  # sigmoid(0) = 1/2
    assert sum(r["choice"] == 1 for r in clear) <= 10  # sigmoid(-6): about 5 in 2000
    assert all(r["grader_choice"] == 0 for r in close + clear)
    assert clear[0]["label_source"] == "g with Bradley-Terry noise (tau=0.15)"
    assert noisy_labels(rows(0.1), 0.15, 3) == noisy_labels(rows(0.1), 0.15, 3)  # seeded


def test_bad_rows_skip_imports_the_valid_rows_lists_the_others_and_reaches_every_stage(
    tmp_path, inputs
):
    from rlhfkit.pipeline import import_data, load_pipeline_config, plan, validate_inputs

    prefs = Path(inputs["preference_dataset"])
    rows = prefs.read_text().splitlines()
    rows[1] = json.dumps({**json.loads(rows[1]), "candidate_1": "   "})
    prefs.write_text("\n".join(rows) + "\n")
    values = dict(arg.split("=", 1) for arg in tiny_args(inputs, tmp_path / "run"))
    config = load_pipeline_config(None, values)
    _, problems = validate_inputs(config)
    assert len(problems) == 1 and f"{prefs}:2: candidate_1 is empty" in problems[0]
    assert "bad_rows=skip" in problems[0]
    config = load_pipeline_config(None, {**values, "bad_rows": "skip"})
    datasets, problems = validate_inputs(config)
    assert problems == []
    out = import_data(config, datasets, tmp_path / "data")
    assert out["preference_pairs"] == len(rows) - 1
    listed = [json.loads(line) for line in (tmp_path / "data" / "dropped_rows.jsonl").open()]
    assert [(row["dataset"], row["line"]) for row in listed] == [(str(prefs), 2)]
    assert out["dropped_rows"][0].startswith(f"{prefs}: left out 1 bad row(s) of {len(rows)}")
    stages = plan(config, False, problems)
    assert stages.reward.bad_rows == "skip" and stages.rl.bad_rows == "skip"


def test_method_dpo_tunes_on_the_pairs_without_a_reward_model_and_reports(tmp_path, inputs):
    from rlhfkit import rlhf_pipeline
    from rlhfkit.pipeline import load_pipeline_config, plan

    settings = {
        **inputs,
        "large_model_reference": "tiny-random-llama",
        "method": "dpo",
        "reinforcement_learning_train_steps": 3,
        "reinforcement_learning_rate_multiplier": 2.0,
        "kl_coeff": 0.2,
        "target_sequence_length": 6,
        "output_dir": str(tmp_path / "run"),
        "rl_options": {"batch_size": 4, "dtype": "fp32", "validation_fraction": 0},
    }
    planned = plan(load_pipeline_config(None, settings), False, [])
    # the pipeline's names arrive as DPO's; a grader judges, so no reward model is trained
    assert (planned.rl.max_steps, planned.rl.learning_rate_multiplier) == (3, 2.0)
    assert planned.rl.beta == 0.2 and planned.reward is None
    assert set(planned.autoraters) == {"grader"}
    result = rlhf_pipeline(**settings)
    summary = result.summary
    assert "reward_model" not in summary and "rl" not in summary
    assert summary["dpo"]["steps"] == 3 and summary["dpo"]["method"] == "dpo"
    assert (tmp_path / "run" / "dpo" / "model" / "config.json").is_file()
    assert summary["side_by_side"]["grader"]["n"] == 3
    report = result.report.read_text()
    assert "held-out implicit-reward accuracy" in report
    # without a grader or autorater the side by side needs a judge: a reward model is trained
    judged = plan(load_pipeline_config(None, {**settings, "grader": None}), False, [])
    assert judged.reward is not None and set(judged.autoraters) == {"reward_model"}


def test_the_dpo_demo_config_plans_dpo_on_the_same_data_judged_by_the_same_grader():
    from rlhfkit.pipeline import load_pipeline_config, plan

    demo = Path(__file__).resolve().parent.parent / "examples" / "demo"
    rl_demo = load_pipeline_config(demo / "pipeline.yaml", {})
    config = load_pipeline_config(
        demo / "pipeline_dpo.yaml", {"large_model_reference": "tiny-random-llama"}
    )
    for same in ("preference_dataset", "prompt_dataset", "eval_dataset", "grader", "instruction"):
        assert getattr(config, same) == getattr(rl_demo, same)
    problems: list[str] = []
    stages = plan(config, False, problems)
    assert problems == []
    assert stages.reward is None and set(stages.autoraters) == {"grader"}
    assert (stages.rl.max_steps, stages.rl.batch_size, stages.rl.beta) == (8, 16, 0.1)
