"""Bulk inference, side by side with each autorater, plots and the report, through the CLI
on the tiny model (and prediction files written by hand)."""

import json
import math
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from cdp import HEADLESS, chromium_or_skip
from rlhfkit.cli import main
from rlhfkit.eval.infer import load_infer_config, resolve_model
from rlhfkit.eval.plot import smooth
from rlhfkit.stats import wilson_interval, win_rates

TOPICS = ("rain", "tea", "owls", "maps", "salt", "glass")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def cli(*args: str) -> int:
    return main([*args])


@pytest.fixture
def prompts(tmp_path) -> Path:
    rows = [
        {"id": f"q{i}", "input_text": f"Tell me about {t}.", "topic": t, "answer": t}
        for i, t in enumerate(TOPICS)
    ]
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


# ---------------------------------------------------------------- infer


def test_infer_keeps_every_field_and_the_order(tmp_path, prompts, capsys):
    out = tmp_path / "pred.jsonl"
    args = ["infer", "large_model_reference=tiny-random-llama", f"prompt_dataset={prompts}"]
    assert cli(*args, f"out={out}", "target_sequence_length=6", "batch_size=4") == 0
    assert "wrote 6 predictions" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)]
    for row, topic in zip(rows, TOPICS, strict=True):
        assert row["input_text"] == f"Tell me about {topic}."
        assert row["topic"] == row["answer"] == topic
        assert isinstance(row["prediction"], str)
        assert isinstance(row["prediction_ended"], bool)
    # greedy answers do not depend on the batch composition or size
    again = tmp_path / "again.jsonl"
    assert cli(*args, f"out={again}", "target_sequence_length=6", "batch_size=1") == 0
    assert [r["prediction"] for r in read_jsonl(again)] == [r["prediction"] for r in rows]
    assert not Path(f"{out}.partial").exists()


def test_infer_continues_a_killed_run(tmp_path, prompts, monkeypatch):
    import rlhfkit.models.generate as generate

    args = [
        "infer",
        "large_model_reference=tiny-random-llama",
        f"prompt_dataset={prompts}",
        "target_sequence_length=5",
        "batch_size=2",
    ]
    full = tmp_path / "full.jsonl"
    assert cli(*args, f"out={full}") == 0
    real, calls = generate.generate_answers, []

    def dies_on_third_batch(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    out = tmp_path / "pred.jsonl"
    monkeypatch.setattr(generate, "generate_answers", dies_on_third_batch)
    assert cli(*args, f"out={out}") == 130
    assert not out.exists()
    partial = Path(f"{out}.partial")
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 4  # the settings line and two finished batches
    # mark the finished answers, and tear a line as a kill during a write would
    marked = [json.dumps({**json.loads(x), "prediction": "KEPT"}) for x in lines[1:]]
    partial.write_text("\n".join([lines[0], *marked]) + '\n{"index": 5, "predi')
    monkeypatch.setattr(generate, "generate_answers", real)
    assert cli(*args, f"out={out}") == 0
    rows, expected = read_jsonl(out), read_jsonl(full)
    assert sum(r["prediction"] == "KEPT" for r in rows) == 4
    assert [r["prediction"] for r in rows if r["prediction"] != "KEPT"] == [
        e["prediction"] for e, r in zip(expected, rows, strict=True) if r["prediction"] != "KEPT"
    ]
    assert not partial.exists()


@pytest.fixture(scope="module")
def rl_run_dir(tmp_path_factory) -> Path:
    """A folder laid out like an RL run: config.yaml and a non-zero policy adapter."""
    import yaml
    from peft import LoraConfig, get_peft_model

    from rlhfkit.models import load_model

    run = tmp_path_factory.mktemp("rl_run")
    model = load_model("tiny-random-llama", dtype="fp32", device="cpu")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(run / "policy")
    config = {
        "large_model_reference": "tiny-random-llama",
        "instruction": "Answer in one word.",
        "target_sequence_length": 7,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_a_run_directory_supplies_its_model_and_settings(rl_run_dir, tmp_path, prompts):
    resolved = resolve_model(str(rl_run_dir), "smollm2-135m-instruct")
    assert resolved.weights == "tiny-random-llama"
    assert resolved.adapter == str(rl_run_dir / "policy")
    assert resolve_model(str(rl_run_dir / "policy"), "x").weights == "tiny-random-llama"
    config = load_infer_config(None, [f"model={rl_run_dir}", "prompt_dataset=p", "out=o"])
    assert config.instruction == "Answer in one word."
    assert config.target_sequence_length == 7
    given = load_infer_config(
        None, [f"model={rl_run_dir}", "prompt_dataset=p", "out=o", "instruction=Hi"]
    )
    assert given.instruction == "Hi"


def test_sxs_runs_models_first_and_the_tuned_adapter_changes_the_answers(
    rl_run_dir, tmp_path, prompts, capsys
):
    out = tmp_path / "sxs"
    grader = tmp_path / "len.yaml"
    grader.write_text(
        "type: python\nname: shorter\nsource: |\n"
        "  def grade(sample, item):\n"
        "      return 1.0 / (1 + len(sample['output_text']))\n"
    )
    args = [
        "sxs",
        "a=tiny-random-llama",
        f"b={rl_run_dir}",
        f"prompt_dataset={prompts}",
        f"autorater=grader:{grader}",
        f"out={out}",
        "large_model_reference=tiny-random-llama",
        "target_sequence_length=6",
        "dtype=fp32",
    ]
    assert cli(*args) == 0
    a, b = read_jsonl(out / "predictions_a.jsonl"), read_jsonl(out / "predictions_b.jsonl")
    assert len(a) == len(b) == 6
    assert [r["prediction"] for r in a] != [r["prediction"] for r in b]
    judgments = read_jsonl(out / "judgments.jsonl")
    assert [j["id"] for j in judgments] == [f"q{i}" for i in range(6)]
    # whether each answer was cut at the token limit travels from infer to the judgments
    assert [(j["ended_a"], j["ended_b"]) for j in judgments] == [
        (ra["prediction_ended"], rb["prediction_ended"]) for ra, rb in zip(a, b, strict=True)
    ]
    for j in judgments:
        better = (
            "A" if j["score_a"] > j["score_b"] else "B" if j["score_b"] > j["score_a"] else "TIE"
        )
        assert j["choice"] == better
        assert j["score_a"] == pytest.approx(1 / (1 + len(j["response_a"])))


# ---------------------------------------------------------------- sxs on prediction files


def predictions(tmp_path: Path, name: str, answers: list[str], **columns) -> Path:
    rows = []
    for i, (topic, answer) in enumerate(zip(TOPICS, answers, strict=True)):
        row = {"id": f"q{i}", "input_text": f"Tell me about {topic}.", "prediction": answer}
        row.update({k: v[i] for k, v in columns.items()})
        rows.append(row)
    return write_jsonl(tmp_path / name, rows)


MENTIONS_TOPIC = {
    "type": "string_check",
    "name": "mentions",
    "input": "{{sample.output_text}}",
    "reference": "{{item.input_text}}",
    "operation": "eq",
}


def topic_grader(tmp_path: Path) -> Path:
    """A python grader: 1 when the answer names the row's topic."""
    grader = tmp_path / "topic.yaml"
    grader.write_text(
        "type: python\nname: mentions\nsource: |\n"
        "  def grade(sample, item):\n"
        "      return float(item['topic'] in sample['output_text'])\n"
    )
    return grader


def topic_answers() -> tuple[list[str], list[str], list[str]]:
    """a's and b's answers and the human choices: b names the topic on rows 0-3, a on
    rows 4 and 5; row 5 both do (a tie for the grader)."""
    named = [f"{t} is a thing." for t in TOPICS]
    b_answers = [*named[:4], "Not sure.", named[5]]
    a_answers = ["No idea."] * 4 + named[4:]
    return a_answers, b_answers, ["B", "B", "A", "B", "A", "TIE"]


def test_sxs_grader_metrics_and_human_agreement(tmp_path, capsys):
    grader = topic_grader(tmp_path)
    a_answers, b_answers, human = topic_answers()
    a = predictions(tmp_path, "a.jsonl", a_answers, topic=list(TOPICS), human=human)
    b = predictions(tmp_path, "b.jsonl", b_answers, topic=list(TOPICS))
    out = tmp_path / "sxs"
    args = [f"a={a}", f"b={b}", f"autorater=grader:{grader}", f"out={out}"]
    assert cli("sxs", *args, "human_preference_column=human") == 0
    printed = capsys.readouterr().out
    assert "B win rate 0.667" in printed and "Cohen's kappa" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n"], metrics["model_b_wins"], metrics["model_a_wins"], metrics["ties"]) == (
        6,
        4,
        1,
        1,
    )
    assert metrics["model_b_win_rate_ci95"] == pytest.approx(list(wilson_interval(4, 6)))
    # autorater B B B B A TIE against humans B B A B A TIE: 5 of 6 agree
    # autorater B 4, A 1, TIE 1; humans B 3, A 2, TIE 1: p_e = (12 + 2 + 1) / 36 = 15/36
    # kappa = (5/6 - 15/36) / (1 - 15/36) = (15/36) / (21/36) = 5/7
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["cohens_kappa"] == pytest.approx(5 / 7)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(1.0)
    rows = read_jsonl(out / "judgments.jsonl")
    assert set(rows[0]) >= {
        "id",
        "prompt",
        "response_a",
        "response_b",
        "choice",
        "confidence",
        "explanation",
    }
    assert [r["choice"] for r in rows] == ["B", "B", "B", "B", "A", "TIE"]
    assert rows[2]["human_choice"] == "A"
    assert all(r["confidence"] == 1.0 for r in rows)


def test_sxs_reads_an_autosxs_evaluation_dataset_and_writes_autosxs_metric_names(tmp_path, capsys):
    grader = topic_grader(tmp_path)
    # one row holds both answers, as Vertex AI AutoSxS reads them; no prompt field at all
    a_answers, b_answers, human = topic_answers()
    rows = [
        {
            "doc_id": i,
            "part": "x",
            "topic": t,
            "facts": f"{t} facts",
            "base": a,
            "tuned": b,
            "pref": h,
        }
        for i, (t, a, b, h) in enumerate(zip(TOPICS, a_answers, b_answers, human, strict=True))
    ]
    dataset = write_jsonl(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "sxs"
    args = [
        f"evaluation_dataset={dataset}",
        "response_column_a=base",
        "response_column_b=tuned",
        "human_preference_column=pref",
        "id_columns=doc_id,part",
        'autorater_prompt_parameters={"inference_instruction": {"template": "Facts:"}, '
        '"inference_context": {"column": "facts"}}',
        f"autorater=grader:{grader}",
        f"out={out}",
    ]
    assert cli("sxs", *args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # the same verdicts as from two prediction files (test above), under both sets of names
    assert (
        metrics["autosxs_model_b_win_rate"] == metrics["model_b_win_rate"] == pytest.approx(4 / 6)
    )
    assert metrics["autosxs_model_a_win_rate"] == pytest.approx(1 / 6)
    assert metrics["autosxs_human_preference_model_b_win_rate"] == pytest.approx(3 / 6)
    assert metrics["autosxs_human_preference_model_a_win_rate"] == pytest.approx(2 / 6)
    assert metrics["autosxs_accuracy"] == pytest.approx(5 / 6)
    assert metrics["autosxs_cohens_kappa"] == pytest.approx(5 / 7)
    assert metrics["autosxs_precision"] == pytest.approx(3 / 4)
    assert metrics["autosxs_recall"] == pytest.approx(1.0)
    assert metrics["a"] == f"{dataset}:base"
    judged = read_jsonl(out / "judgments.jsonl")
    assert [r["id"] for r in judged] == [f"{i}/x" for i in range(6)]
    assert judged[0]["prompt"] == f"Facts:\n\n{TOPICS[0]} facts"
    assert [r["choice"] for r in judged] == ["B", "B", "B", "B", "A", "TIE"]
    # a row without a named column is listed with its file:line
    write_jsonl(dataset, [*rows[:2], {k: v for k, v in rows[2].items() if k != "facts"}])
    assert cli("sxs", *args[:-1], f"out={tmp_path / 'again'}") == 2
    err = capsys.readouterr().err
    assert (
        f"{dataset}:3: no field 'facts' (named by autorater_prompt_parameters.inference_context)"
        in err
    )
    # an AutoSxS file and prediction files are not mixed
    assert cli("sxs", *args, f"a={dataset}") == 2
    assert (
        "give evaluation_dataset (both answers in one file) or a and b" in capsys.readouterr().err
    )


def test_sxs_reward_model_probability_and_identical_answers(tmp_path, tiny_reward_model):
    from rlhfkit.eval.score import score_file

    a = predictions(tmp_path, "a.jsonl", [f"{t} is nice." for t in TOPICS])
    b_answers = [f"I do not know {t}." for t in TOPICS[:5]] + [f"{TOPICS[5]} is nice."]
    b = predictions(tmp_path, "b.jsonl", b_answers)
    out = tmp_path / "sxs"
    assert (
        cli("sxs", f"a={a}", f"b={b}", f"autorater=reward_model:{tiny_reward_model}", f"out={out}")
        == 0
    )
    rows = read_jsonl(out / "judgments.jsonl")
    rewards_a = [r["reward"] for r in score_file(tiny_reward_model, a).rows]
    for row, r_a in zip(rows[:5], rewards_a, strict=False):
        assert row["score_a"] == pytest.approx(r_a, abs=2e-3)
        p_a = 1 / (1 + math.exp(-(row["score_a"] - row["score_b"])))
        assert row["choice"] == ("A" if p_a > 0.5 else "B")
        assert row["confidence"] == pytest.approx(max(p_a, 1 - p_a))
    assert rows[5]["choice"] == "TIE" and rows[5]["confidence"] == 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["identical_pairs"] == 1 and metrics["ties"] >= 1


# ---------------------------------------------------------------- sxs with an HTTP judge


class PairJudge(BaseHTTPRequestHandler):
    """An OpenAI-style judge: prefers the answer with GOOD in it; answers nonsense when the
    request mentions glass, and always picks the first answer when it mentions salt."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        first = text.split("[Response A]")[1].split("[Response B]")[0]
        if "glass" in text:
            content = "Hmm, both have merits; I would rather not say."
        elif "salt" in text:
            content = '{"choice": "A", "explanation": "the first one"}'
        else:
            choice = "A" if "GOOD" in first else "B"
            content = json.dumps({"choice": choice, "explanation": f"{choice} has GOOD"})
        raw = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pair_judge_url():
    server = HTTPServer(("127.0.0.1", 0), PairJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_sxs_http_judge_both_orders_position_bias_and_malformed(tmp_path, pair_judge_url, capsys):
    # GOOD answers: b on rain, tea, owls, salt, glass; a on maps
    b_answers = [f"GOOD {t}" if t != "maps" else "meh" for t in TOPICS]
    a_answers = [f"GOOD {t}" if t == "maps" else "meh" for t in TOPICS]
    a = predictions(tmp_path, "a.jsonl", a_answers)
    b = predictions(tmp_path, "b.jsonl", b_answers)
    out = tmp_path / "sxs"
    args = [f"a={a}", f"b={b}", f"autorater=judge:{pair_judge_url}", f"out={out}"]
    assert cli("sxs", *args, "judge_model=pairwise") == 0
    # 1 of 6 pairs unreadable, above a tenth: said
    assert "warning: 1 of 6 pairs (17%) have no readable judgment" in capsys.readouterr().err
    rows = {r["prompt"].split()[-1].rstrip("."): r for r in read_jsonl(out / "judgments.jsonl")}
    assert rows["rain"]["choice"] == "B" and rows["rain"]["confidence"] == 1.0
    assert rows["rain"]["votes"] == ["B", "B"]
    assert rows["maps"]["choice"] == "A"
    # always "A": the orders disagree, so a tie with no confidence
    assert rows["salt"]["choice"] == "TIE" and rows["salt"]["confidence"] == 0.0
    assert rows["glass"]["choice"] == "INVALID" and rows["glass"]["malformed"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 5 and metrics["invalid_judgments"] == 1
    assert metrics["malformed_judge_outputs"] == 2
    assert metrics["position_disagreements"] == 1
    assert (metrics["model_b_wins"], metrics["model_a_wins"], metrics["ties"]) == (3, 1, 1)


def test_sxs_http_judge_unreachable_is_counted_and_fails_the_command(tmp_path, capsys):
    a = predictions(tmp_path, "a.jsonl", ["x"] * 6)
    b = predictions(tmp_path, "b.jsonl", ["y"] * 6)
    out = tmp_path / "sxs"
    args = [f"a={a}", f"b={b}", "autorater=judge:http://127.0.0.1:9/v1", f"out={out}"]
    # every judgment unreadable: the figures are written, the command fails
    assert cli("sxs", *args, "judge_timeout_seconds=2") == 1
    assert "error: no pair could be judged" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["invalid_judgments"] == 6 and metrics["malformed_judge_outputs"] == 12
    assert "cannot reach" in read_jsonl(out / "judgments.jsonl")[0]["explanation"]


# ---------------------------------------------------------------- sxs errors


def test_sxs_user_mistakes_are_clear_errors(tmp_path, capsys):
    a = predictions(tmp_path, "a.jsonl", ["x"] * 6, human=["A", "B", "maybe", "", "B", "A"])
    b = predictions(tmp_path, "b.jsonl", ["y"] * 6)
    other = write_jsonl(tmp_path / "other.jsonl", [{"input_text": "Unrelated?", "prediction": "z"}])
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps(MENTIONS_TOPIC))
    base = [f"a={a}", f"autorater=grader:{grader}", f"out={tmp_path / 'o'}"]
    cases = [
        ([*base, f"b={other}"], ["not predictions over the same prompts", "a.jsonl:1"]),
        ([*base, f"b={b}", "human_preference_column=human"], ["a.jsonl:3", "'maybe'"]),
        ([*base, f"b={b}", "human_preference_column=nope"], ["no row of"]),
        ([*base, f"b={b}", "response_column_b=answer"], ["b.jsonl:1", "'answer'"]),
        ([*base, "b=some-model"], ["prompt_dataset"]),
        ([*base, f"b={tmp_path / 'missing.jsonl'}"], ["does not exist"]),
        ([f"a={a}", f"b={b}", "autorater=vibes", f"out={tmp_path / 'o'}"], ["reward_model:DIR"]),
        (
            [
                f"a={a}",
                f"b={b}",
                f"autorater=reward_model:{tmp_path}/nope",
                f"out={tmp_path / 'o'}",
            ],
            ["not a folder"],
        ),
    ]
    for args, expected in cases:
        assert cli("sxs", *args) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err
        for text in expected:
            assert text in err, (args, err)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- plot and report


def test_smooth_hand_worked():
    # weight 0.5: raw EMA 0.5, 1.25, 2.125; debiased by 1 - 0.5^t: 1, 1.6667, 2.4286
    assert smooth([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 5 / 3, 2.125 / 0.875])
    assert smooth([4.0, 1.0], 0.0) == [4.0, 1.0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"step": s, "reward": s / 10, "kl_loss": 0.1 * s, "policy/clipfrac": 0.2, "note": "x"}
        for s in range(1, 21)
    ]
    rows[4]["reward"] = float("nan")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.yaml").write_text("instruction: 'Say <b>hi</b>'\nkl_coeff: 0.1\n")
    return folder


def test_plot_writes_a_png_per_scalar(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert cli("plot", str(run)) == 0
    files = sorted(p.name for p in (run / "plots").iterdir())
    assert files == ["kl_loss.png", "policy_clipfrac.png", "reward.png"]
    assert png_size(run / "plots" / "reward.png") == (600, 350)
    # a pipeline folder: one folder of plots per stage
    fake_run(tmp_path / "pipe" / "reward_model")
    fake_run(tmp_path / "pipe" / "rl")
    capsys.readouterr()
    assert cli("plot", str(tmp_path / "pipe")) == 0
    assert (tmp_path / "pipe" / "plots" / "rl" / "kl_loss.png").is_file()
    plots = tmp_path / "pipe" / "plots"
    assert f"wrote 6 plots: 3 to {plots / 'reward_model'}, 3 to {plots / 'rl'}" in (
        capsys.readouterr().out
    )
    assert cli("plot", str(tmp_path / "nothing")) == 2
    assert "does not exist" in capsys.readouterr().err


HOSTILE = [
    "<script>document.title='PWNED'</script>",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">",
    "</td></tr></table><h1>injected</h1>",
]


def hostile_run(tmp_path: Path) -> Path:
    run = fake_run(tmp_path / "run")
    (run / "summary.json").write_text(json.dumps({"eval_reward_after": 1.5, "note": HOSTILE[0]}))
    sxs = run / "sxs"
    sxs.mkdir()
    rows = []
    for i in range(24):
        rows.append(
            {
                "id": f"q{i}",
                "prompt": f"Prompt {i} {HOSTILE[i % 3]} " + "long text " * (30 if i == 0 else 1),
                "response_a": f"A{i} {HOSTILE[(i + 1) % 3]}",
                "response_b": f"B{i} {HOSTILE[(i + 2) % 3]}",
                "choice": "B" if i % 3 else "A",
                "confidence": 0.9,
                "explanation": HOSTILE[1],
                "score_a": 0.0,
                "score_b": (i - 8) / 10,
            }
        )
    (sxs / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {**win_rates([r["choice"] for r in rows]), "a": "base", "b": HOSTILE[0]}
    (sxs / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_escapes_model_text_and_orders_examples(tmp_path):
    run = hostile_run(tmp_path)
    assert cli("report", str(run)) == 0
    page = (run / "report.html").read_text()
    assert "<script" not in page.lower() and "onerror=" not in page.replace("onerror=&#34;", "")
    assert "&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;" in page
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;h1&gt;injected" in page
    assert "Content-Security-Policy" in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 3  # reward, kl_loss, policy/clipfrac
    assert "Say &lt;b&gt;hi&lt;/b&gt;" in page  # the resolved config
    best = page.index("Where tuned did best")
    worst = page.index("Where tuned did worst")
    rest = page.index("All other examples (4)")
    assert best < page.index(">B23 ") < worst < page.index(">B0 ") < rest
    assert "[0.467, 0.820]" in page  # Wilson interval of 16/24


def test_report_renders_hostile_text_in_chromium_without_running_it(tmp_path):
    import subprocess

    browser = chromium_or_skip()
    run = hostile_run(tmp_path)
    assert cli("report", str(run)) == 0
    flags = [
        browser,
        *HEADLESS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
    ]
    url = (run / "report.html").as_uri()
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    width, height = png_size(shot)
    assert (width, height) == (1280, 2000) and shot.stat().st_size > 20_000
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "PWNED" not in dom.split("</title>")[0]  # the title was not rewritten
    assert "data-pwned" not in dom.split("<body")[1].split(">")[0]
    assert "<script" not in dom and '<img src="x"' not in dom and "<h1>injected" not in dom
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom


def test_sxs_local_judge_model_that_writes_nonsense_is_counted(tmp_path):
    a = predictions(tmp_path, "a.jsonl", [f"{t} one" for t in TOPICS])
    b = predictions(tmp_path, "b.jsonl", [f"{t} two" for t in TOPICS])
    out = tmp_path / "sxs"
    args = [f"a={a}", f"b={b}", "autorater=judge:tiny-random-llama", f"out={out}"]
    code = cli("sxs", *args, "judge_max_tokens=4")
    rows = read_jsonl(out / "judgments.jsonl")
    metrics = json.loads((out / "metrics.json").read_text())
    # the figures are written either way; the command fails only when no pair was judged
    assert code == (1 if metrics["invalid_judgments"] == 6 else 0)
    assert len(rows) == 6 and all(r["choice"] in ("A", "B", "TIE", "INVALID") for r in rows)
    assert metrics["malformed_judge_outputs"] == sum(r.get("malformed", 0) for r in rows) > 0
    assert metrics["invalid_judgments"] == sum(r["choice"] == "INVALID" for r in rows)
    assert metrics["n"] + metrics["invalid_judgments"] == 6


class SlowCountingJudge(PairJudge):
    """PairJudge that takes its time and counts the requests it answers."""

    requests = 0

    def do_POST(self):
        type(self).requests += 1
        time.sleep(0.15)
        super().do_POST()


def test_a_killed_sxs_continues_without_asking_the_judge_again(tmp_path):
    import signal
    import subprocess
    import sys
    from http.server import ThreadingHTTPServer

    topics = [f"{t}{i}" for i in range(4) for t in ("rain", "tea", "owls", "maps")]
    a, b = (
        write_jsonl(
            tmp_path / name,
            [{"input_text": f"Tell me about {t}.", "prediction": f"{word} {t}"} for t in topics],
        )
        for name, word in (("a.jsonl", "meh"), ("b.jsonl", "GOOD"))
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowCountingJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    out = tmp_path / "sxs"
    args = [f"a={a}", f"b={b}", f"autorater=judge:{url}", f"out={out}", "batch_size=2"]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlhfkit.cli", "sxs", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        journal = out / "judgments.partial"
        deadline = time.time() + 120
        while time.time() < deadline and (
            not journal.exists() or len(journal.read_text().splitlines()) < 1 + 6
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kept = len(journal.read_text().splitlines()) - 1
        assert 6 <= kept < 16 and not (out / "judgments.jsonl").exists()
        asked_before = SlowCountingJudge.requests
        assert cli("sxs", *args) == 0
        asked_again = SlowCountingJudge.requests - asked_before
    finally:
        server.shutdown()
    # each pair is asked in both orders; the kept judgments are not asked again
    assert asked_again == 2 * (16 - kept)
    rows = read_jsonl(out / "judgments.jsonl")
    assert [r["choice"] for r in rows] == ["B"] * 16
    assert [r["prompt"] for r in rows] == [f"Tell me about {t}." for t in topics]
    assert not journal.exists()
    assert json.loads((out / "metrics.json").read_text())["model_b_wins"] == 16


def test_score_cli_names_the_better_length_rule_on_preference_pairs(
    tmp_path, tiny_reward_model, capsys
):
    # the chosen answer is the shorter one in 3 of 4 pairs: prefer-shorter is the rule to beat
    rows = [
        {
            "input_text": "q1",
            "candidate_0": "short",
            "candidate_1": "a much longer one",
            "choice": 0,
        },
        {"input_text": "q2", "candidate_0": "tiny", "candidate_1": "longer than tiny", "choice": 0},
        {
            "input_text": "q3",
            "candidate_0": "brief",
            "candidate_1": "not brief at all",
            "choice": 0,
        },
        {"input_text": "q4", "candidate_0": "x", "candidate_1": "a long answer", "choice": 1},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli("score", "--reward-model", str(tiny_reward_model), "--data", str(data)) == 0
    err = capsys.readouterr().err
    assert "on 4 pairs" in err
    assert "the better length rule, prefer-shorter, 0.750" in err


def test_score_cli_skips_bad_rows_when_asked_and_lists_them_beside_the_output(
    tmp_path, tiny_reward_model, capsys
):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        '{"input_text": "q1", "candidate_0": "a", "candidate_1": "bb", "choice": 0}\n'
        '{"input_text": "q2", "candidate_0": "", "candidate_1": "bb", "choice": 0}\n'
    )
    args = ["score", "--reward-model", str(tiny_reward_model), "--data", str(data)]
    assert cli(*args) == 2
    assert "bad_rows=skip" in capsys.readouterr().err
    out = tmp_path / "scores.jsonl"
    assert cli(*args, "--out", str(out), "--bad-rows", "skip") == 0
    printed = capsys.readouterr().out
    assert "wrote 1 scored rows" in printed
    assert "left out 1 bad row(s) of 2 (bad_rows=skip): 1 x candidate_0 is empty" in printed
    listed = [json.loads(line) for line in (tmp_path / "scores.dropped_rows.jsonl").open()]
    assert [row["line"] for row in listed] == [2]
    assert cli(*args, "--bad-rows", "skip") == 0  # no file to list them in: all on stderr
    assert f"  - {data}:2: candidate_0 is empty" in capsys.readouterr().err
