import json
import subprocess
import sys
from pathlib import Path

from rlhfkit.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_inspect_json_reports_kind_format_rows_and_statistics(capsys):
    assert (
        main(
            [
                "data",
                "inspect",
                str(EXAMPLES / "summarize_preferences.jsonl"),
                "--json",
                "prompt_sequence_length=64",
                "instruction=Summarize.",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["kind"], report["format"], report["rows"]) == ("preference", "rlhf_text", 6)
    assert report["choice_balance"] == {"0": 3, "1": 3}
    assert report["truncated"]["prompts"] == 6  # every document is over 64 tokens
    assert set(report["length_tokens"]) == {"prompt", "chosen", "rejected"}
    stats = report["length_tokens"]["prompt"]
    assert stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert report["duplicates"] == {"prompts": 0, "pairs": 0, "conflicts": 0}
    assert len(report["examples"]) == 3


def test_inspect_readable_output_and_plots(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "inspect",
                str(EXAMPLES / "summarize_prompts.jsonl"),
                "--plot",
                str(tmp_path / "plots"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "kind: prompt" in out and "rows: 6" in out and "truncation:" in out
    png = tmp_path / "plots" / "prompt_tokens.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_rows_stop_convert_but_are_statistics_in_inspect_and_skip_lists_them(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"input_text": "a", "candidate_0": "x", "candidate_1": "y", "choice": 1}\n'
        '{"input_text": "b", "candidate_0": "x", "candidate_1": "y", "choice": 2}\n'
        "{not json\n"
    )
    out = tmp_path / "out.jsonl"
    result = run("data", "convert", str(bad), str(out), "--to", "trl")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:2" in result.stderr and "choice" in result.stderr
    assert f"{bad}:3" in result.stderr and "bad_rows=skip" in result.stderr
    assert not out.exists()
    # inspect describes the valid rows and counts the others; --strict makes them an error
    result = run("data", "inspect", str(bad), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 1
    assert report["bad_rows"]["rows"] == 2
    assert report["bad_rows"]["by_reason"] == {
        "choice must be 0 or 1 (the index of the preferred candidate)": 1,
        "invalid JSON: Expecting property name enclosed in double quotes at column 2": 1,
    }
    assert report["bad_rows"]["first"][0].startswith(f"{bad}:2: choice must be 0 or 1")
    result = run("data", "inspect", str(bad), "--strict")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "bad rows:" in result.stdout and f"{bad}:3" in result.stdout
    # skip: the valid row is written, the others counted and listed beside the output
    result = run("data", "convert", str(bad), str(out), "--to", "trl", "--bad-rows", "skip")
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 1
    listed = [json.loads(line) for line in (tmp_path / "out.dropped_rows.jsonl").open()]
    assert [row["line"] for row in listed] == [2, 3]
    assert "left out 2 bad row(s) of 3 (bad_rows=skip)" in result.stderr
    # log lines for people: a warning says so, without the logger's module name
    assert result.stderr.startswith(f"warning: {bad}: left out"), result.stderr


def test_bad_override_exits_2(tmp_path):
    result = run(
        "data", "inspect", str(EXAMPLES / "summarize_prompts.jsonl"), "prompt_sequence_length=many"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "prompt_sequence_length='many': expected an integer" in result.stderr


def test_convert_through_the_cli(tmp_path, capsys):
    out = tmp_path / "trl.jsonl"
    assert (
        main(
            [
                "data",
                "convert",
                str(EXAMPLES / "summarize_preferences.jsonl"),
                str(out),
                "--to",
                "trl",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) >= {"prompt", "chosen", "rejected"}
    assert "wrote 6 rows" in capsys.readouterr().out


def test_model_check_answers_with_the_tiny_model(capsys):
    assert main(["model", "check", "tiny-random-llama", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "tiny-random-llama" in out and "answer:" in out


def test_inspect_flags_conflicting_pairs_counts_an_epoch_and_overlays_lengths(tmp_path):
    rows = [
        {"prompt": "q1", "chosen": "a short one", "rejected": "a much longer answer here"},
        {"prompt": "q1", "chosen": "a much longer answer here", "rejected": "a short one"},
        {"prompt": "q1", "chosen": "a short one", "rejected": "a much longer answer here"},
        {"prompt": "q2", "chosen": "yes", "rejected": "no"},
        {"prompt": "q3", "chosen": "fine", "rejected": "bad"},
    ]
    data = tmp_path / "trl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plots = tmp_path / "plots"
    result = run("data", "inspect", str(data), "--json", "--batch-size", "2", "--plot", str(plots))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # TRL rows have no candidate order, so no choice balance to report
    assert "choice_balance" not in report
    assert report["duplicates"] == {"prompts": 2, "pairs": 2, "conflicts": 1}
    assert report["steps_per_epoch"] == {"batch_size": 2, "steps": 3}
    overlay = plots / "chosen_vs_rejected_tokens.png"
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(overlay) in report["plots"]
    result = run("data", "inspect", str(data))
    assert "1 conflicting pair(s)" in " ".join(result.stdout.split())
    assert "one epoch: 1 step(s) at batch_size 16" in " ".join(result.stdout.split())
    assert "choice balance" not in result.stdout


def test_stage_help_lists_every_parameter_and_examples_that_are_real_parameters():
    from dataclasses import fields

    from rlhfkit.cli_help import STAGE_HELP, check_stage_help, config_class

    assert check_stage_help() == []
    result = run("train-reward", "--help")
    assert result.returncode == 0
    reward = config_class(STAGE_HELP["train-reward"].configs[0][0])
    for field in fields(reward):
        assert f"  {field.name}  (" in result.stdout, field.name
    assert "head_pooling  (str, default: mean)" in result.stdout
    assert "examples:\n  rlhfkit train-reward preference_dataset=" in result.stdout
    # train-rl: the parameters of every method, then what PPO and GRPO/RLOO add
    result = run("train-rl", "--help")
    for heading in ("parameters of every method", "method=ppo (the default)", "method=grpo and"):
        assert heading in result.stdout
    assert "ppo_mini_batch_size  (" in result.stdout and "compute_multiplier  (" in result.stdout


def test_demo_help_and_config_name_the_packaged_example_files():
    from rlhfkit.demo import DEMO_CONFIG, EXAMPLES, load_demo_config

    result = run("demo", "--help")
    assert result.returncode == 0
    assert "reinforcement_learning_train_steps  (" in result.stdout
    assert "examples:\n  rlhfkit demo output_dir=runs/demo seed=1" in result.stdout
    assert str(EXAMPLES) in " ".join(result.stdout.split())
    result = run("demo", "--print-config")
    assert result.stdout.startswith(f"# {DEMO_CONFIG}\n")
    assert DEMO_CONFIG.read_text() in result.stdout
    # the config's files are the packaged ones; output_dir and given paths start here
    config = load_demo_config(["large_model_reference=tiny-random-llama", "eval_dataset=e.jsonl"])
    assert config.prompt_dataset == str(EXAMPLES / "demo" / "prompts.jsonl")
    assert config.grader == str(EXAMPLES / "graders" / "summary_content.yaml")
    assert (config.eval_dataset, config.output_dir) == ("e.jsonl", "runs/demo")


def test_misspelled_commands_get_did_you_mean():
    result = run("trian-reward", "x=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown command 'trian-reward'; did you mean 'train-reward'?" in result.stderr
    result = run("data", "inspct", "file.jsonl")
    assert "unknown command 'inspct'; did you mean 'inspect'?" in result.stderr
    result = run("zzz")
    assert "unknown command 'zzz'; choose one of data, model" in result.stderr


def test_file_system_errors_are_one_line_with_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    prefs = str(EXAMPLES / "summarize_preferences.jsonl")
    messages = []
    for args in (
        ("data", "convert", prefs, str(blocker / "out.jsonl"), "--to", "trl"),
        ("data", "inspect", prefs, "--plot", str(blocker)),
        ("data", "convert", prefs, "/proc/rlhfkit_out.jsonl", "--to", "trl"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        messages.append(lines[0])
    assert messages[1] == (
        f"error: {blocker}: file exists; it is in the way (a folder must go there); remove it "
        "or choose another path"
    )


def test_output_paths_are_checked_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    prompts = str(EXAMPLES / "summarize_prompts.jsonl")
    prefs = str(EXAMPLES / "summarize_preferences.jsonl")
    tiny = "large_model_reference=tiny-random-llama"
    cases = {
        "infer into a folder": (
            ["infer", f"prompt_dataset={prompts}", f"out={tmp_path}", tiny],
            f"{tmp_path}: is a directory",
        ),
        "train-reward under a file": (
            ["train-reward", f"preference_dataset={prefs}", f"output_dir={blocker}/rm", tiny],
            f"{blocker}: not a directory",
        ),
        "run into a file": (
            [
                "run",
                f"preference_dataset={prefs}",
                f"prompt_dataset={prompts}",
                f"output_dir={blocker}",
                tiny,
            ],
            f"output_dir: {blocker}: file exists",
        ),
        "score into /proc": (
            ["score", "--reward-model", str(tmp_path), "--data", prefs, "--out", "/proc/x.jsonl"],
            "/proc/x.jsonl:",
        ),
    }
    for name, (args, expected) in cases.items():
        result = run(*args)
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr, name
        assert expected in result.stderr, (name, result.stderr)
    assert list(tmp_path.iterdir()) == [blocker]  # nothing half-written, no .partial


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback():
    # `rlhfkit train-rl --help | head -1`: the reader is gone before the help is written
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "train-rl", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    _, err = process.communicate(timeout=300)
    assert b"Traceback" not in err, err.decode()
    assert process.returncode == 1
