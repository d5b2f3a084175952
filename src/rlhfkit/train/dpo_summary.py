"""How a DPO run's result is said: the held-out implicit-reward accuracy against chance and
the length rule, and the kept step."""

from __future__ import annotations

from typing import Any

from rlhfkit.train.reward_summary import figure


def dpo_lines(result: dict[str, Any]) -> list[str]:
    """A finished run's figures as printed (from `DPOResult` fields, e.g. summary.json)."""
    low, high = result["eval_accuracy_ci95"]
    lines = [
        f"DPO: held-out implicit-reward accuracy {result['eval_accuracy']:.3f} (95% interval "
        f"{low:.3f} to {high:.3f}) on {result['eval_pairs']} pairs, reward margin "
        f"{result['eval_reward_margin']:.3f}; prefer-longer rule "
        f"{result['longer_baseline_accuracy']:.3f}; where the chosen answer is longer "
        f"{figure(result['eval_accuracy_chosen_longer'])}, shorter "
        f"{figure(result['eval_accuracy_chosen_shorter'])}",
        f"  {result['verdict']}",
    ]
    lines += [f"  {line}" for line in result.get("dropped_rows", [])]
    if result["validation_pairs"]:
        stop = ", stopped early" if result["stopped_early"] else ""
        lines.append(
            f"  kept step {result['best_step']} of {result['steps']}{stop}: the lowest "
            f"validation loss on {result['validation_pairs']} pairs set aside from training"
        )
    return lines


def dpo_sentence(result: dict[str, Any]) -> str:
    """The DPO stage in one sentence (`rlhfkit run`'s summary, the report's first screen)."""
    low, high = result["eval_accuracy_ci95"]
    return (
        f"DPO ({result.get('loss_type', 'sigmoid')} loss, beta {result.get('beta', 0.1):g}): "
        f"held-out implicit-reward accuracy {result['eval_accuracy']:.3f} (95% interval "
        f"{low:.3f} to {high:.3f}) on {result['eval_pairs']} pairs, prefer-longer rule "
        f"{result['longer_baseline_accuracy']:.3f}; step {result['best_step']} of "
        f"{result['steps']} kept"
    )
