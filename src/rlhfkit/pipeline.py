"""The whole RLHF pipeline in one call: `rlhfkit run` and `rlhfkit.rlhf_pipeline(...)`.

What Vertex AI's `rlhf_pipeline` runs, with its parameter names and defaults, locally:
validate inputs -> import the datasets -> train the reward model -> reinforcement learning
-> bulk inference on the eval prompts with the base and the tuned model -> side by side
of tuned (b) against base (a) -> report.

Run directory (`output_dir`):

    config.yaml, config.json   the resolved pipeline config
    summary.json               the figures printed at the end
    report.html                the report (rlhfkit report)
    data/                      the imported datasets: preferences.jsonl, prompts.jsonl
                               (training prompts), eval.jsonl (eval prompts or pairs)
    reward_model/              the train-reward run; reward_model/reward_model is the model
    rl/                        the train-rl run: metrics, checkpoints, policy/, model/
    infer/                     base.jsonl and tuned.jsonl, the answers to the eval prompts
    sxs/NAME/                  judgments.jsonl and metrics.json per autorater
    STAGE/stage.json           per stage: the hash of its inputs and config, and its status

A stage whose `stage.json` says done with the same hash is skipped; one that was
interrupted (same hash, not done) continues from its last checkpoint; one whose inputs
or config changed is run again from scratch, and so is every stage after it.
`from_stage=NAME` (`--from-stage`) forces a fresh run from that stage on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.config import build_config, check, param, parse_overrides, read_yaml, to_dict
from rlhfkit.data.config import DataConfig, data_settings
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.fileio import atomic_write_json, atomic_write_jsonl
from rlhfkit.graders.sandbox import resolve_mode, sandbox_param
from rlhfkit.train import METHODS

logger = logging.getLogger(__name__)

STAGES = ("import", "reward_model", "rl", "infer", "sxs", "report")
STAGE_FILE = "stage.json"
RL_REWARDS = ("auto", "reward_model", "grader")


@dataclass
class PipelineConfig(DataConfig):
    """The pipeline (`rlhfkit run`, `rlhfkit.rlhf_pipeline`); names and defaults as in
    Vertex AI's rlhf_pipeline where it has them."""

    preference_dataset: str | None = param(
        None, "Preference pairs for the reward model (any supported preference format)."
    )
    prompt_dataset: str | None = param(None, "Prompts for reinforcement learning.")
    eval_dataset: str | None = param(
        None,
        "Eval prompts for the side by side (default: 10% of prompt_dataset held out); a "
        "preference file also evaluates the reward model (its prompts are then the eval prompts).",
    )
    model_display_name: str | None = param(None, "Name of the tuned model (report title).")
    reward_model_learning_rate_multiplier: float = param(
        1.0, "Multiplies the reward model's base learning rate."
    )
    reinforcement_learning_rate_multiplier: float = param(
        1.0, "Multiplies the RL base learning rate."
    )
    reward_model_train_steps: int = param(
        1000, "Reward-model optimizer steps (0: its head fitted on the base model's features)."
    )
    reinforcement_learning_train_steps: int = param(1000, "Reinforcement-learning steps.")
    kl_coeff: float | None = param(
        None,
        "Weight of the KL penalty to the base model (default: the method's own, as in "
        "train-rl: ppo 0.1, grpo and rloo 0).",
    )
    method: str = param("ppo", "RL method: ppo, grpo or rloo.", choices=METHODS)
    grader: str | None = param(
        None,
        "Grader file: a side-by-side autorater, and RL's reward where rl_reward picks it.",
    )
    grader_sandbox: str | None = sandbox_param()
    rl_reward: str = param(
        "auto",
        "What RL maximises: reward_model (trained on preference_dataset), grader, or auto "
        "(ppo: the reward model; grpo / rloo: the grader when set, else the reward model).",
        choices=RL_REWARDS,
    )
    autorater: str | None = param(
        None, "Side-by-side autorater (default: the trained reward model); see rlhfkit sxs."
    )
    eval_fraction: float = param(
        0.1, "Share of prompt_dataset held out as eval prompts when eval_dataset is not set."
    )
    reward_model_options: dict = param(
        {}, "More train-reward parameters, e.g. {lora_rank: 8} (CLI: reward_model_options.KEY=V)."
    )
    rl_options: dict = param(
        {}, "More train-rl parameters, e.g. {batch_size: 4} (CLI: rl_options.KEY=V)."
    )
    seed: int = param(0, "Seed of every stage.")
    output_dir: str = param("runs/pipeline", "Run directory (layout: docs/pipeline.md).")
    from_stage: str | None = param(
        None, f"Run again from this stage on: {', '.join(STAGES)}.", choices=(None, *STAGES)
    )

    def validate(self) -> None:
        super().validate()
        if self.grader_sandbox is not None:
            resolve_mode(self.grader_sandbox, "grader_sandbox")
        check(bool(self.prompt_dataset), "prompt_dataset", self.prompt_dataset, "is required")
        check(
            bool(self.preference_dataset) or self.reward_source == "grader",
            "preference_dataset",
            self.preference_dataset,
            "is required (a reward model is trained on it); only a grader as RL's reward "
            "(method=grpo or rloo with a grader, or rl_reward=grader) can do without",
        )
        check(0 < self.eval_fraction < 1, "eval_fraction", self.eval_fraction, "in (0, 1)")
        check(
            self.reward_source != "grader" or bool(self.grader),
            "rl_reward",
            self.rl_reward,
            "grader needs a grader file: set grader=PATH, or rl_reward=reward_model",
        )
        check(
            self.reinforcement_learning_train_steps >= 1,
            "reinforcement_learning_train_steps",
            self.reinforcement_learning_train_steps,
            "must be at least 1",
        )
        check(
            self.reward_model_train_steps >= 0,
            "reward_model_train_steps",
            self.reward_model_train_steps,
            "must be >= 0 (0: the reward model's fitted head alone, no training step)",
        )

    @property
    def trains_reward_model(self) -> bool:
        return bool(self.preference_dataset)

    @property
    def reward_source(self) -> str:
        """`reward_model` or `grader`: what RL maximises (rl_reward with auto resolved)."""
        if self.rl_reward != "auto":
            return self.rl_reward
        return "grader" if self.method != "ppo" and self.grader else "reward_model"


@dataclass
class PipelineResult:
    run_dir: Path
    summary: dict[str, Any]
    report: Path


def rlhf_pipeline(**parameters: Any) -> PipelineResult:
    """Run the pipeline with `rlhfkit run`'s parameters given as keyword arguments.

    Example:
        rlhf_pipeline(preference_dataset="prefs.jsonl", prompt_dataset="prompts.jsonl",
                      reward_model_train_steps=200, output_dir="runs/mine")
    """
    return run_pipeline(load_pipeline_config(None, parameters))


PATH_PARAMETERS = ("preference_dataset", "prompt_dataset", "eval_dataset", "grader")
"""The input files a pipeline config names (`relative_to` of load_pipeline_config)."""


def load_pipeline_config(
    path: str | Path | None,
    overrides: list[str] | dict[str, Any] | None = None,
    relative_to: Path | None = None,
) -> PipelineConfig:
    """Defaults < YAML file < overrides; `reward_model_options.KEY=V` and `rl_options.KEY=V`
    overrides set one stage parameter each. With `relative_to` (`rlhfkit demo`: the installed
    package), the file's relative PATH_PARAMETERS start there instead of the working
    directory; the overrides' and output_dir still start at the working directory."""
    values: dict[str, Any] = read_yaml(path) if path else {}
    if relative_to is not None:
        for key in PATH_PARAMETERS:
            if isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
                values[key] = str(relative_to / values[key])
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key, value in (overrides or {}).items():
        group, dot, name = key.partition(".")
        if dot and group in ("reward_model_options", "rl_options"):
            values[group] = {**(values.get(group) or {}), name: value}
        else:
            values[key] = value
    return build_config(PipelineConfig, values, source=str(path) if path else "parameters")


# ---------------------------------------------------------------- stage settings


@dataclass
class Plan:
    """Resolved paths and stage configs, built (and so validated) before anything runs."""

    run_dir: Path
    reward: Any | None  # RewardConfig
    rl: Any  # RLConfig or GRPOConfig
    autoraters: dict[str, str]  # sxs folder name -> autorater spec
    eval_is_preference: bool


def _data(run_dir: Path, name: str) -> str:
    return str(run_dir / "data" / name)


def _shared(config: PipelineConfig) -> dict[str, Any]:
    """What every stage takes from the pipeline: the text encoding and the seed."""
    return {**data_settings(config), "seed": config.seed}


def plan(config: PipelineConfig, eval_is_preference: bool, problems: list[str]) -> Plan:
    """Every stage's config, validated; what is wrong is appended to `problems`."""
    from rlhfkit.train.methods import load_rl_config, method
    from rlhfkit.train.reward import RewardConfig

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
    rl = _collect(problems, "rl_options", lambda: load_rl_config(None, rl_values))
    autoraters = {}
    if config.autorater:
        autoraters["autorater"] = config.autorater
    elif config.trains_reward_model:
        autoraters["reward_model"] = f"reward_model:{rm_dir / 'reward_model'}"
    if config.grader and f"grader:{config.grader}" not in autoraters.values():
        autoraters["grader"] = f"grader:{config.grader}"
    return Plan(run_dir, reward, rl, autoraters, eval_is_preference)


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


# ---------------------------------------------------------------- stages and their hashes


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def stage_key(name: str, settings: dict[str, Any], upstream: list[str]) -> str:
    """The hash that decides whether a finished stage can be kept."""
    blob = json.dumps([name, settings, upstream], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageRunner:
    """Runs a stage, skips it, or continues it, by its `stage.json`."""

    def __init__(self, run_dir: Path, from_stage: str | None):
        self.run_dir = run_dir
        self.forced = False
        self.from_stage = from_stage

    def run(
        self, name: str, key: str, work: Callable[[Path, bool], Any], folder_name: str = ""
    ) -> Any:
        """`work(folder, resume)` runs the stage; its return value is stored as the stage's
        outputs and returned (also when the stage is skipped)."""
        folder = self.run_dir / (folder_name or name)
        record_path = folder / STAGE_FILE
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        self.forced = self.forced or name == self.from_stage
        same = record is not None and record.get("key") == key and not self.forced
        if same and record.get("status") == "done":
            logger.info("stage %s: unchanged, skipped (%s)", name, folder)
            return record.get("outputs")
        resume = same  # interrupted with the same inputs: continue
        if not resume and folder.exists():
            why = "forced" if self.forced else "inputs changed" if record else "incomplete"
            logger.info("stage %s: starting again (%s)", name, why)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        atomic_write_json(record_path, {"key": key, "status": "running", "started": started})
        print(f"== stage {name}{' (continuing)' if resume else ''}", flush=True)
        outputs = work(folder, resume)
        seconds = round(time.time() - started, 1)
        atomic_write_json(
            record_path,
            {
                "key": key,
                "status": "done",
                "started": started,
                "seconds": seconds,
                "outputs": outputs,
            },
        )
        print(f"== stage {name} done in {seconds // 60:.0f} min {seconds % 60:.0f} s", flush=True)
        return outputs


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
    # step 3. reinforcement learning
    grader_digest = file_digest(config.grader) if config.grader else None
    # RL depends on what it maximises only: a judging grader or reward model can change freely
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
    prompts = datasets["prompt_dataset"].rows
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
    summary["rl"] = rl
    summary["side_by_side"] = sxs
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as the lines `rlhfkit run` prints (the report's first screen says the
    same, see `eval.verdicts`)."""
    from rlhfkit.eval.verdicts import rl_sentence, side_by_side_verdict

    lines = list(summary.get("data", {}).get("dropped_rows", []))
    reward = summary.get("reward_model")
    if reward:
        from rlhfkit.train.reward import result_lines

        lines.extend(result_lines(reward))
    lines.append(rl_sentence(summary["rl"]))
    for metrics in summary["side_by_side"].values():
        lines.append(f"side by side: {side_by_side_verdict(metrics).text}")
    lines.append(f"report: {summary.get('report')}")
    return lines
