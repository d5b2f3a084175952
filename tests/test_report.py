"""The report leads with the answer: the verdict wording, the page of a small pipeline run
(verdict, curves by stage, examples side by side, details), the report of one stage run
alone, and the page in headless Chromium at desktop (1280 px) and phone (390 px) width."""

import json
import math
import struct
from pathlib import Path

import pytest

from cdp import Chromium, chromium_or_skip
from rlhfkit.cli import main
from rlhfkit.eval.verdicts import mean_last_kl, side_by_side_verdict
from rlhfkit.stats import win_rates

DOCUMENTS = {
    "doc-0901": "Tarrowdale Rail has delayed the reopening of the line to Vellford until May.",
    "doc-0902": "Brennan Foods, founded in Bellstead in 1879, made a profit of £28.7 million.",
    "doc-0903": "Yarlholm Town clinched promotion with a 4-1 win over Vaskdale Rangers.",
    "doc-0904": "A study followed 186 teenagers who wore sleep trackers for two years.",
    "doc-0905": "Hillside High School in Harlholm won a national award for its choir.",
    "doc-0906": "The council will repair the bridge over the Wend before the winter.",
}
GRADER = "grader:examples/graders/summary_content.yaml"


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def sxs_metrics(choices: list[str], autorater: str) -> dict:
    return {
        **win_rates(choices),
        "pairs": len(choices),
        "invalid_judgments": 0,
        "malformed_judge_outputs": 0,
        "autorater": autorater,
        "a": "infer/base.jsonl",
        "b": "infer/tuned.jsonl",
    }


# ---------------------------------------------------------------- the verdict in words


def judged(tuned: int, base: int, ties: int) -> dict:
    return sxs_metrics(["B"] * tuned + ["A"] * base + ["TIE"] * ties, "grader:g.yaml")


def test_side_by_side_verdict_counts_ties_half_and_says_who_wins():
    # 80 wins + 4 ties / 2 = 82 of 100; Wilson: centre (0.82 + 1.96²/200) / (1 + 1.96²/100)
    # = 0.8082, half-width 1.96 sqrt(0.82 * 0.18 / 100 + 1.96²/40000) / 1.0384 = 0.0748
    better = side_by_side_verdict(judged(80, 16, 4))
    assert better.kind == "better" and (better.low, better.high) == pytest.approx(
        (0.7333, 0.8830), abs=1e-4
    )
    assert better.text == (
        "tuned beats base: 0.82 (95% interval 0.73 to 0.88, ties counted half) by "
        "grader:g.yaml, n=100; tuned wins 0.80, base wins 0.16, ties 0.04"
    )
    # many ties: tuned wins only 0.43 of the pairs but 43 + 40 / 2 = 63 of 100 is ahead
    assert side_by_side_verdict(judged(43, 17, 40)).text.startswith(
        "tuned beats base: 0.63 (95% interval 0.53 to 0.72"
    )
    worse = side_by_side_verdict(judged(23, 66, 11))  # base: 66 + 11 / 2 = 71.5 of 100
    assert worse.kind == "worse"
    assert worse.text.startswith("base beats tuned: 0.72 (95% interval 0.62 to 0.79")
    even = side_by_side_verdict(judged(55, 45, 0))
    assert even.kind == "unclear" and even.text.startswith(
        "tuned and base are not distinguishable from chance: tuned 0.55 (95% interval "
        "0.45 to 0.64, ties counted half)"
    )
    nothing = side_by_side_verdict({**judged(0, 0, 0), "autorater": "judge:x"})
    assert nothing == ("none", "no pair could be judged by judge:x", 0.0, 1.0)


def test_mean_last_kl_is_the_last_five_logged_steps():
    rows = [{"step": 0, "valid_reward_mean": 1.0}] + [
        {"step": s, "objective/kl": float(s)} for s in range(1, 8)
    ]
    assert mean_last_kl(rows) == (3 + 4 + 5 + 6 + 7) / 5
    assert mean_last_kl(rows[:1]) is None


# ---------------------------------------------------------------- a small pipeline run


def reward_stage(run: Path) -> dict:
    """reward_model/: the head fitted on the base model's features, no training step."""
    low, high = 0.6478, 0.7680
    summary = {
        "run_dir": str(run / "reward_model"),
        "reward_model_dir": str(run / "reward_model" / "reward_model"),
        "eval_accuracy": 0.7116,
        "eval_rank_loss": 0.5697,
        "longer_baseline_accuracy": 0.5605,
        "train_pairs": 501,
        "eval_pairs": 215,
        "eval_accuracy_ci95": [low, high],
        "eval_ties": 0,
        "eval_accuracy_chosen_longer": 0.6917,
        "eval_accuracy_chosen_shorter": 0.7340,
        "validation_pairs": 0,
        "steps": 0,
        "best_step": 0,
        "stopped_early": False,
        "verdict": "better than chance on 215 held-out pairs (95% interval 0.648 to 0.768); "
        "above the better length rule, prefer-longer (0.560)",
        "dropped_rows": [],
    }
    write_json(run / "reward_model" / "summary.json", summary)
    held_out = {"eval/rank_loss": 0.5697, "eval/margin": 0.4637, "eval/n": 215}
    held_out |= {"eval/accuracy": 0.7116, "eval/accuracy_ci95_low": low}
    held_out |= {"eval/accuracy_ci95_high": high, "eval/ties": 0, "eval/n_chosen_longer": 120}
    held_out |= {"eval/accuracy_chosen_longer": 0.6917, "eval/accuracy_chosen_shorter": 0.734}
    held_out |= {"eval/n_chosen_shorter": 94, "eval/longer_baseline_accuracy": 0.5605}
    write_jsonl(run / "reward_model" / "metrics.jsonl", [{"step": 0, **held_out, "best_step": 0}])
    (run / "reward_model" / "config.yaml").write_text("head_warm_start: true\nbatch_size: 8\n")
    return summary


def rl_step(step: int) -> dict:
    """One logged RL step, the keys `train-rl` logs (rloo), the values made up."""
    return {
        "step": step,
        "train_reward_mean": 1.8 * (1 - math.exp(-step / 4)),
        "train_reward_std": 0.3,
        "rl_loss": 0.01 * (-1) ** step,
        "policy/loss": 0.0,
        "policy/clipfrac": 0.0,
        "objective/entropy": 1.6 - 0.09 * step,
        "grad_norm": 0.4,
        "rollout/response_length": 54.0 + step * 0.8,
        "rollout/ended_fraction": 0.1,
        "objective/kl": 0.02 * step,
        "timing/sampling": 11.4,
        "timing/step": 19.6,
        "tokens_per_second": 26.2,
        "learning_rate": 0.001,
    }


def rl_stage(run: Path) -> dict:
    """rl/: 12 steps, the held-out reward at steps 0 and 12."""
    rows = [{"step": 0, "valid_reward_mean": 0.8728, "valid_response_length": 54.9}]
    rows += [rl_step(s) for s in range(1, 13)]
    rows[-1] |= {"valid_reward_mean": 1.8551, "valid_response_length": 64.0}
    write_jsonl(run / "rl" / "metrics.jsonl", rows)
    result = {"eval_reward_before": 0.8728, "eval_reward_after": 1.8551, "eval_prompts": 16}
    result["steps"] = 12
    write_json(run / "rl" / "summary.json", {"run_dir": str(run / "rl"), **result})
    (run / "rl" / "config.yaml").write_text("method: rloo\nkl_coeff: 0.05\n")
    return {**result, "kl_last_5_steps": mean_last_kl(rows), "method": "rloo"}


def sxs_stage(run: Path) -> dict:
    """sxs/grader and sxs/reward_model over the same six prompts; one tuned answer is
    empty (the grader and the reward model prefer the base there), the first was cut at
    the token limit."""
    outputs = {}
    for name, autorater, scale in (("grader", GRADER, 1.0), ("reward_model", "reward_model:rm", 3)):
        rows = []
        for i, (doc, text) in enumerate(DOCUMENTS.items()):
            tuned = "" if i == 5 else text.split(",")[0] + "."
            score_a, score_b = 0.1 * scale, (0.0 if not tuned else (0.5 + 0.05 * i) * scale)
            rows.append(
                {
                    "id": doc,
                    "prompt": f"{text} " + "More about the story. " * (20 if i == 0 else 2),
                    "response_a": f"The article is about {doc}.",
                    "response_b": tuned,
                    "choice": "B" if score_b > score_a else "A",
                    "confidence": 1.0,
                    "explanation": f"grade A {score_a:.4f}, grade B {score_b:.4f}",
                    "score_a": score_a,
                    "score_b": score_b,
                    "ended_a": True,
                    "ended_b": i != 0,
                }
            )
        metrics = sxs_metrics([r["choice"] for r in rows], autorater)
        write_jsonl(run / "sxs" / name / "judgments.jsonl", rows)
        write_json(run / "sxs" / name / "metrics.json", metrics)
        outputs[name] = metrics
    return outputs


def small_pipeline_run(root: Path) -> Path:
    """A pipeline run directory laid out as `rlhfkit run` writes it, in a few kB."""
    run = root / "run"
    reward, rl, sxs = reward_stage(run), rl_stage(run), sxs_stage(run)
    summary = {"run_dir": str(run), "data": {"preference_pairs": 716, "eval_rows": 6}}
    summary["data"]["dropped_rows"] = [DROPPED]
    summary |= {"model_display_name": "brief-summarizer", "reward_model": reward}
    summary |= {"rl": {**rl, "reward": "reward_model:rm"}, "side_by_side": sxs}
    write_json(run / "summary.json", summary)
    (run / "config.yaml").write_text("model_display_name: brief-summarizer\n")
    return run


DROPPED = "prefs.jsonl: left out 1 bad row(s) of 717 (candidate_1 is empty: 1)"
# 5 of 6 to tuned: (5 + 0 / 2) / 6 = 0.833, Wilson interval 0.436 to 0.970 holds 0.5
VERDICT = "tuned and base are not distinguishable from chance: tuned 0.83 (95% interval 0.44"
RL_LINE = (
    "RL (rloo on reward_model:rm): held-out reward 0.8728 before, 1.8551 after (+0.9823) on "
    "16 prompts, 12 steps, KL 0.200 (mean of the last 5 steps)"  # (8 + ... + 12) * 0.02 / 5
)


def test_report_leads_with_the_verdict_then_curves_examples_and_details(tmp_path):
    run = small_pipeline_run(tmp_path)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    order = [
        "<h2>Verdict</h2>",
        VERDICT,
        "reward model: held-out accuracy 0.712 (95% interval 0.648 to 0.768) on 215 pairs; "
        "prefer-longer rule 0.560; where the chosen answer is longer 0.692, shorter 0.734",
        "above the better length rule, prefer-longer (0.560)",
        RL_LINE,
        DROPPED,
        "<h2>Training curves</h2>",
        "No training step: the reward head was fitted on the base model&#39;s features alone",
        'alt="train_reward_mean"',
        'alt="objective/kl"',
        "<summary>Other training figures (7)</summary>",  # train_reward_std ... learning_rate
        "<summary>Timing and throughput (3)</summary>",
        "<h3>Where tuned did best</h3>",
        "<h3>Where tuned did worst</h3>",
        '<div class="text empty">(empty answer)</div>',
        "<h2>Details</h2>",
        "Every figure of summary.json",
        "Resolved config",
    ]
    places = [page.index(text) for text in order]
    assert places == sorted(places)
    assert page.count("data:image/png;base64,") == 6 + 7 + 3  # open, other, timing
    assert page.count("<article") == 6  # each prompt once, with both judges' verdicts
    assert page.count("(cut off at the token limit") == 1
    assert page.count("<b>grader</b>") == page.count("<b>reward_model</b>") == 6


def test_report_of_a_train_rl_or_train_reward_run_alone(tmp_path):
    run = small_pipeline_run(tmp_path)
    assert main(["report", str(run / "rl")]) == 0
    page = (run / "rl" / "report.html").read_text()
    assert (
        "RL: held-out reward 0.8728 before, 1.8551 after (+0.9823) on 16 prompts, 12 steps, "
        "KL 0.200 (mean of the last 5 steps)"
    ) in page
    assert "No side by side in this run" in page and "<h3>RL</h3>" in page
    assert main(["report", str(run / "reward_model")]) == 0
    page = (run / "reward_model" / "report.html").read_text()
    assert "reward model: held-out accuracy 0.712" in page and "No training step" in page
    assert "<h3>RL</h3>" not in page and "data:image/png" not in page


# ---------------------------------------------------------------- in Chromium


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def look(browser: Chromium, url: str, width: int, shot: Path) -> dict:
    """Open the page at `width` x 800, screenshot it, and measure it (then again with every
    collapsed section open)."""
    metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    browser.call("Emulation.setDeviceMetricsOverride", metrics)
    browser.open(url)
    browser.screenshot(shot)
    measures = browser.evaluate(
        "(() => { const v = [...document.querySelectorAll('.verdict .answer')]"
        f".find(e => e.textContent.startsWith({json.dumps(VERDICT)}));"
        " return {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,"
        " verdictBottom: v ? v.getBoundingClientRect().bottom + window.scrollY : null}; })()"
    )
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    measures["scrollOpen"] = browser.evaluate("document.documentElement.scrollWidth")
    return measures


def test_report_fits_desktop_and_phone_width_in_chromium(tmp_path):
    binary = chromium_or_skip()
    run = small_pipeline_run(tmp_path)
    assert main(["report", str(run)]) == 0
    url = (run / "report.html").as_uri()
    browser = Chromium(binary, tmp_path / "profile")
    try:
        for width in (1280, 390):
            shot = tmp_path / f"report-{width}.png"
            seen = look(browser, url, width, shot)
            assert png_size(shot.read_bytes()) == (width, 800) and shot.stat().st_size > 10_000
            assert seen["inner"] == width
            assert seen["scroll"] <= width and seen["scrollOpen"] <= width, seen
            assert seen["verdictBottom"] is not None, "the verdict is not on the page"
            if width == 1280:
                assert seen["verdictBottom"] <= 800, seen  # on the first screen
    finally:
        browser.close()
