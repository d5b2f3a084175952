"""One-sentence verdicts on a run's figures, as the first screen of the report states them.

A side by side compares tuned (B) with base (A), as `rlhfkit run` and the docs name them.
The reward model's lines are `train.reward.result_lines`, the ones `train-reward` and
`rlhfkit run` print.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rlhfkit.stats import wilson_interval

KL_WINDOW = 5
"""The KL of an RL run is the mean of its last this many logged steps (as `rlhfkit run`)."""


class Verdict(NamedTuple):
    """A side by side in one sentence, with the interval it rests on.

    Attributes:
        kind: `better` (tuned ahead), `worse` (base ahead), `unclear` or `none` (no pair).
        text: the sentence.
        low: lower end of the 95% Wilson interval of tuned's share of the judged pairs,
            ties counted half (0.5: even).
        high: its upper end.
    """

    kind: str
    text: str
    low: float = 0.0
    high: float = 1.0


def side_by_side_verdict(metrics: dict[str, Any]) -> Verdict:
    """Whether tuned beats base by one judge, with the win rates and the ties.

    Tuned's share counts each win 1 and each tie 1/2 (as the reward model's accuracy does),
    so 0.5 is what two equally good models get whatever the tie rate. Tuned beats base when
    the share's 95% Wilson interval lies above 0.5, base beats tuned when it lies below;
    an interval that holds 0.5 is not distinguishable from chance.

    Args:
        metrics: an sxs folder's `metrics.json` (`n`, `autorater`, `model_b_wins`, `ties`
            and the three rates).

    Returns:
        e.g. `tuned beats base: 0.82 (95% interval 0.73 to 0.88, ties counted half) by
        grader:g.yaml, n=100; tuned wins 0.80, base wins 0.16, ties 0.04`.
    """
    judge, n = metrics.get("autorater", "an unnamed judge"), metrics.get("n", 0)
    if not n:
        return Verdict("none", f"no pair could be judged by {judge}")
    points = metrics["model_b_wins"] + metrics["ties"] / 2
    share, (low, high) = points / n, wilson_interval(points, n)
    rest = (
        f"by {judge}, n={n}; tuned wins {metrics['model_b_win_rate']:.2f}, base wins "
        f"{metrics['model_a_win_rate']:.2f}, ties {metrics['tie_rate']:.2f}"
    )
    if low > 0.5:
        figure, kind, head = _figure(share, low, high), "better", "tuned beats base"
    elif high < 0.5:
        figure, kind, head = _figure(1 - share, 1 - high, 1 - low), "worse", "base beats tuned"
    else:
        figure = f"tuned {_figure(share, low, high)}"
        kind, head = "unclear", "tuned and base are not distinguishable from chance"
    return Verdict(kind, f"{head}: {figure} {rest}", low, high)


def _figure(share: float, low: float, high: float) -> str:
    return f"{share:.2f} (95% interval {low:.2f} to {high:.2f}, ties counted half)"


def rl_sentence(rl: dict[str, Any]) -> str:
    """The held-out reward before and after RL and the KL, in the words of `rlhfkit run`
    (for a DPO stage, `method` dpo: its held-out implicit-reward accuracy).

    Args:
        rl: `eval_reward_before`, `eval_reward_after`, `eval_prompts`, `steps`; optional
            `kl_last_5_steps`, `method` and `reward` (a pipeline summary's `rl`).
    """
    if rl.get("method") == "dpo":
        from rlhfkit.train.dpo_summary import dpo_sentence

        return dpo_sentence(rl)
    change = rl["eval_reward_after"] - rl["eval_reward_before"]
    kl = rl.get("kl_last_5_steps")
    maximised = f" ({rl['method']} on {rl['reward']})" if "reward" in rl and "method" in rl else ""
    return (
        f"RL{maximised}: held-out reward {rl['eval_reward_before']:.4f} before, "
        f"{rl['eval_reward_after']:.4f} after ({change:+.4f}) on {rl['eval_prompts']} "
        f"prompts, {rl['steps']} steps"
        + (f", KL {kl:.3f} (mean of the last {KL_WINDOW} steps)" if kl is not None else "")
    )


def mean_last_kl(rows: list[dict[str, Any]]) -> float | None:
    """Mean `objective/kl` over the last `KL_WINDOW` metrics rows that log it (None if none)."""
    values = [row["objective/kl"] for row in rows if "objective/kl" in row][-KL_WINDOW:]
    return sum(values) / len(values) if values else None
