"""`run_pipeline`: validate, plan every stage, then run them in order (see the package)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.config import build_config, to_dict
from rlhfkit.data.config import data_settings
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.fileio import atomic_write_json, atomic_write_jsonl
from rlhfkit.pipeline.config import PipelineConfig
from rlhfkit.pipeline.stages import StageRunner, file_digest, stage_key

logger = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    run_dir: Path
    summary: dict[str, Any]
    report: Path


# ---------------------------------------------------------------- stage settings


@dataclass
class Plan:
    """Resolved paths and stage configs, built (and so validated) before anything runs."""

    run_dir: Path
    reward: Any | None  # RewardConfig
    rl: Any  # RLConfig or GRPOConfig, or DPOConfig for method=dpo
    autoraters: dict[str, str]  # sxs folder name -> autorater spec
    eval_is_preference: bool


def _data(run_dir: Path, name: str) -> str:
    return str(run_dir / "data" / name)


def _shared(config: PipelineConfig) -> dict[str, Any]:
    """What every stage takes from the pipeline: the text encoding and the seed."""
    return {**data_settings(config), "seed": config.seed}


def plan(config: PipelineConfig, eval_is_preference: bool, problems: list[str]) -> Plan:
    """Every stage's config, validated; what is wrong is appended to `problems`."""
    from rlhfkit.train.reward_config import RewardConfig

    run_dir = Path(config.output_dir)
    shared = _shared(config)
    reward = None
    rm_dir = run_dir / "reward_model"
    if config.trains_reward_model:
        values = {
            **shared,
            "preference_dataset": _data(run_dir, "preferences.jsonl"),
            "eval_dataset": _data(run_dir, "eval.jsonl") if eval_is_preference else None,
            "reward_model_train_steps": config.reward_model_train_steps,
            "reward_model_learning_rate_multiplier": config.reward_model_learning_rate_multiplier,
            **config.reward_model_options,
            "output_dir": str(rm_dir),
        }
        reward = _collect(
            problems, "reward_model_options", lambda: build_config(RewardConfig, values)
        )
    tuned = (_plan_dpo if config.method == "dpo" else _plan_rl)(
        config, shared, eval_is_preference, problems
    )
    autoraters = {}
    if config.autorater:
        autoraters["autorater"] = config.autorater
    elif config.trains_reward_model:
        autoraters["reward_model"] = f"reward_model:{rm_dir / 'reward_model'}"
    if config.grader and f"grader:{config.grader}" not in autoraters.values():
        autoraters["grader"] = f"grader:{config.grader}"
    return Plan(run_dir, reward, tuned, autoraters, eval_is_preference)


def _plan_rl(
    config: PipelineConfig, shared: dict[str, Any], eval_is_preference: bool, problems: list[str]
) -> Any:
    """The RL stage's config (method ppo, grpo or rloo)."""
    from rlhfkit.train.methods import load_rl_config, method

    run_dir = Path(config.output_dir)
    rm_dir = run_dir / "reward_model"
    rl_values: dict[str, Any] = {
        **shared,
        "method": config.method,
        "prompt_dataset": _data(run_dir, "prompts.jsonl"),
        "grader": config.grader if config.reward_source == "grader" else None,
        "grader_sandbox": config.grader_sandbox,
        "reward_model": str(rm_dir / "reward_model")
        if config.reward_source == "reward_model"
        else None,
    }
    eval_prompts = _data(run_dir, "eval.jsonl")
    if config.kl_coeff is not None:
        rl_values["kl_coeff"] = config.kl_coeff
    vertex_names = {
        "eval_dataset": eval_prompts,
        "reinforcement_learning_train_steps": config.reinforcement_learning_train_steps,
        "reinforcement_learning_rate_multiplier": config.reinforcement_learning_rate_multiplier,
    }
    rl_values.update(method(config.method).translate(vertex_names))
    rl_values.update(config.rl_options)
    rl_values["output_dir"] = str(run_dir / "rl")
    return _collect(problems, "rl_options", lambda: load_rl_config(None, rl_values))


DPO_NAMES = {
    "reinforcement_learning_train_steps": "max_steps",
    "reinforcement_learning_rate_multiplier": "learning_rate_multiplier",
    "kl_coeff": "beta",
}
"""The pipeline's name -> train-dpo's: DPO's beta is the weight of the KL to the reference,
the kl_coeff of the RL objective it solves in closed form."""


def _plan_dpo(
    config: PipelineConfig, shared: dict[str, Any], eval_is_preference: bool, problems: list[str]
) -> Any:
    """The DPO stage's config (method=dpo): the preference pairs, the held-out pairs when
    the eval file is one."""
    from rlhfkit.train.dpo_config import DPOConfig

    run_dir = Path(config.output_dir)
    values: dict[str, Any] = {
        **shared,
        "preference_dataset": _data(run_dir, "preferences.jsonl"),
        "eval_dataset": _data(run_dir, "eval.jsonl") if eval_is_preference else None,
    }
    for name, dpo_name in DPO_NAMES.items():
        if getattr(config, name) is not None:
            values[dpo_name] = getattr(config, name)
    values.update(config.rl_options)
    values["output_dir"] = str(run_dir / "dpo")
    return _collect(problems, "rl_options", lambda: build_config(DPOConfig, values))


def _collect(problems: list[str], where: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ConfigError as exc:
        problems.append(f"{where}: {exc}")
        return None


# ---------------------------------------------------------------- validation


def validate_inputs(config: PipelineConfig) -> tuple[dict[str, Any], list[str]]:
    """Load every dataset, grader and model reference; returns the datasets and the list of
    every problem found (empty when all is well)."""
    from rlhfkit.data.formats import load_dataset
    from rlhfkit.errors import DatasetError
    from rlhfkit.fileio import check_output_path, file_error

    problems: list[str] = []
    datasets: dict[str, Any] = {}
    try:
        check_output_path(config.output_dir, folder=True)
    except OSError as exc:
        problems.append(f"output_dir: {file_error(exc)}")
    for name, kind in (
        ("preference_dataset", "preference"),
        ("prompt_dataset", None),
        ("eval_dataset", None),
    ):
        path = getattr(config, name)
        if not path:
            continue
        try:
            datasets[name] = load_dataset(path, kind=kind, bad_rows=config.bad_rows)
        except DatasetError as exc:
            problems.append(f"{name}: {exc}")
        except RlhfkitError as exc:
            problems.append(f"{name}: {exc}")
    prompts = datasets.get("prompt_dataset")
    if prompts is not None and prompts.kind != "prompt":
        problems.append(
            f"prompt_dataset: {config.prompt_dataset} is a preference dataset; give prompts "
            "(input_text, messages or prompt rows)"
        )
    if config.grader:
        problems += _check_grader(config.grader, config.grader_sandbox)
    if config.autorater and config.autorater.startswith("grader:"):
        problems += _check_grader(config.autorater.partition(":")[2], config.grader_sandbox)
    try:
        from rlhfkit.models.loading import load_tokenizer

        load_tokenizer(config.large_model_reference)
    except RlhfkitError as exc:
        problems.append(f"large_model_reference: {exc}")
    return datasets, problems


def _check_grader(path: str, sandbox: str | None) -> list[str]:
    from rlhfkit.graders import load_grader

    try:
        load_grader(path, sandbox=sandbox).close()
    except RlhfkitError as exc:
        return [f"grader {path}: {exc}"]
    return []


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Validate everything, then run the stages in order (see the module docstring)."""
    from rlhfkit.fileio import write_config

    # step 0. validate inputs and every stage's parameters before any training
    datasets, problems = validate_inputs(config)
    eval_set = datasets.get("eval_dataset")
    eval_is_preference = eval_set is not None and eval_set.kind == "preference"
    stages = plan(config, eval_is_preference, problems)
    if problems:
        raise ConfigError(
            f"the pipeline cannot start: {len(problems)} problem(s)\n  - "
            + "\n  - ".join(p.replace("\n", "\n    ") for p in problems)
        )
    run_dir = stages.run_dir
    write_config(run_dir, to_dict(config))
    runner = StageRunner(run_dir, config.from_stage)
    # step 1. import the datasets
    import_key = stage_key(
        "import",
        {"eval_fraction": config.eval_fraction, "seed": config.seed},
        [f"{name}:{file_digest(path)}" for name, d in datasets.items() for path in d.files],
    )
    data = runner.run(
        "import", import_key, lambda folder, _: import_data(config, datasets, folder), "data"
    )
    # step 2. reward model
    rm_key = None
    reward = None
    if stages.reward is not None:
        rm_key = stage_key("reward_model", to_dict(stages.reward), [import_key])
        reward = runner.run(
            "reward_model", rm_key, lambda f, resume: _train_reward(stages.reward, resume)
        )
    # step 3. reinforcement learning, or DPO on the pairs
    grader_digest = file_digest(config.grader) if config.grader else None
    if config.method == "dpo":
        rl_key = stage_key("dpo", to_dict(stages.rl), [import_key])
        rl = runner.run("dpo", rl_key, lambda f, resume: _train_dpo(stages.rl, resume))
    else:
        # RL depends on what it maximises only: a judging grader or reward model may change
        reward_key = grader_digest if config.reward_source == "grader" else rm_key
        rl_key = stage_key("rl", to_dict(stages.rl), [import_key, reward_key])
        rl = runner.run("rl", rl_key, lambda f, resume: _train_rl(stages.rl, resume))
    # step 4. base and tuned answers to the eval prompts
    infer_key = stage_key("infer", {"shared": _shared(config)}, [rl_key, import_key])
    predictions = runner.run("infer", infer_key, lambda f, _: _infer_both(config, rl, f))
    # step 5. side by side, one folder per autorater
    sxs_key = stage_key("sxs", stages.autoraters, [infer_key, rm_key, grader_digest])
    sxs = runner.run("sxs", sxs_key, lambda f, _: _side_by_side(config, stages, predictions, f))
    # step 6. summary and report
    from rlhfkit.eval.report import REPORT_FILE, write_report

    summary = _summary(config, data, reward, rl, sxs, run_dir)
    summary["report"] = str(run_dir / REPORT_FILE)
    atomic_write_json(run_dir / "summary.json", summary)  # the report shows it
    report = write_report(run_dir, title=config.model_display_name)
    return PipelineResult(run_dir, summary, report)


def import_data(config: PipelineConfig, datasets: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the datasets into the run: every valid input row kept as it was, the prompts
    split into training and eval prompts when no eval_dataset is given, the rows that
    bad_rows=skip left out listed in dropped_rows.jsonl."""
    from rlhfkit.data.formats import DROPPED_ROWS_FILE, record_dropped
    from rlhfkit.train.common import split_held_out

    outputs: dict[str, Any] = {}
    dropped = record_dropped(
        {getattr(config, name): dataset for name, dataset in datasets.items()},
        folder / DROPPED_ROWS_FILE,
    )
    for line in dropped:
        logger.warning(line)
    if dropped:
        outputs["dropped_rows"] = dropped
    if "preference_dataset" in datasets:
        outputs["preference_pairs"] = atomic_write_jsonl(
            folder / "preferences.jsonl", datasets["preference_dataset"].rows
        )
    prompts = datasets["prompt_dataset"].rows if "prompt_dataset" in datasets else []
    if "eval_dataset" in datasets:
        eval_rows = datasets["eval_dataset"].rows
        outputs["eval_kind"] = datasets["eval_dataset"].kind
    else:
        train_idx, eval_idx = split_held_out(len(prompts), config.eval_fraction, config.seed)
        prompts, eval_rows = [prompts[i] for i in train_idx], [prompts[i] for i in eval_idx]
        outputs["eval_kind"] = "prompt"
    outputs["train_prompts"] = atomic_write_jsonl(folder / "prompts.jsonl", prompts)
    outputs["eval_rows"] = atomic_write_jsonl(folder / "eval.jsonl", eval_rows)
    return outputs


def _train_reward(reward_config: Any, resume: bool) -> dict[str, Any]:
    import dataclasses

    from rlhfkit.train.reward import train_reward_model

    result = train_reward_model(dataclasses.replace(reward_config, resume=resume))
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items() if k != "run_dir"
    }


def _train_rl(rl_config: Any, resume: bool) -> dict[str, Any]:
    import dataclasses

    from rlhfkit.eval.verdicts import mean_last_kl
    from rlhfkit.tracking import read_metrics
    from rlhfkit.train.methods import train_rl

    result = train_rl(dataclasses.replace(rl_config, resume=resume))
    return {
        "run_dir": str(result.run_dir),
        "model_dir": str(result.model_dir) if result.model_dir else None,
        "eval_reward_before": result.eval_reward_before,
        "eval_reward_after": result.eval_reward_after,
        "eval_prompts": result.eval_prompts,
        "steps": result.steps,
        "kl_last_5_steps": mean_last_kl(read_metrics(result.run_dir)),
        "method": rl_config.method,
        "reward": f"grader:{rl_config.grader}"
        if rl_config.grader
        else f"reward_model:{rl_config.reward_model}",
    }


def _train_dpo(dpo_config: Any, resume: bool) -> dict[str, Any]:
    import dataclasses

    from rlhfkit.train.dpo import train_dpo

    result = train_dpo(dataclasses.replace(dpo_config, resume=resume))
    outputs = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
    return {**outputs, "method": "dpo", "loss_type": dpo_config.loss_type, "beta": dpo_config.beta}


def _infer_both(config: PipelineConfig, rl: dict[str, Any], folder: Path) -> dict[str, str]:
    from rlhfkit.eval.infer import InferConfig, infer

    eval_file = _data(Path(config.output_dir), "eval.jsonl")
    outputs = {}
    for name, model in (("base", config.large_model_reference), ("tuned", rl["run_dir"])):
        infer_config = build_config(
            InferConfig,
            {
                **_shared(config),
                "model": model,
                "prompt_dataset": eval_file,
                "out": str(folder / f"{name}.jsonl"),
            },
        )
        outputs[name] = str(infer(infer_config).out)
    return outputs


def _side_by_side(
    config: PipelineConfig, stages: Plan, predictions: dict[str, str], folder: Path
) -> dict[str, Any]:
    from rlhfkit.eval.sxs import SxSConfig, run_sxs

    results = {}
    for name, spec in stages.autoraters.items():
        sxs_config = build_config(
            SxSConfig,
            {
                **data_settings(config),
                "a": predictions["base"],
                "b": predictions["tuned"],
                "autorater": spec,
                "grader_sandbox": config.grader_sandbox,
                "out": str(folder / name),
            },
        )
        metrics = run_sxs(sxs_config).metrics
        keep = ("autorater", "n", "model_b_wins", "model_a_wins", "ties", "model_b_win_rate",
                "model_b_win_rate_ci95", "model_a_win_rate", "tie_rate",
                "invalid_judgments")  # fmt: skip
        results[name] = {k: metrics[k] for k in keep}
    return results


def _summary(
    config: PipelineConfig,
    data: dict[str, Any],
    reward: dict[str, Any] | None,
    rl: dict[str, Any],
    sxs: dict[str, Any],
    run_dir: Path,
) -> dict[str, Any]:
    summary: dict[str, Any] = {"run_dir": str(run_dir), "data": data}
    if config.model_display_name:
        summary["model_display_name"] = config.model_display_name
    if reward:
        summary["reward_model"] = reward
    summary["dpo" if rl.get("method") == "dpo" else "rl"] = rl
    summary["side_by_side"] = sxs
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as the lines `rlhfkit run` prints (the report's first screen says the
    same, see `eval.verdicts`)."""
    from rlhfkit.eval.verdicts import rl_sentence, side_by_side_verdict

    lines = list(summary.get("data", {}).get("dropped_rows", []))
    reward = summary.get("reward_model")
    if reward:
        from rlhfkit.train.reward_summary import result_lines

        lines.extend(result_lines(reward))
    lines.append(rl_sentence(summary.get("rl") or summary["dpo"]))
    for metrics in summary["side_by_side"].values():
        lines.append(f"side by side: {side_by_side_verdict(metrics).text}")
    lines.append(f"report: {summary.get('report')}")
    return lines
