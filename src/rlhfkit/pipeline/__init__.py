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

from rlhfkit.pipeline.config import STAGES, PipelineConfig, load_pipeline_config
from rlhfkit.pipeline.entry import rlhf_pipeline
from rlhfkit.pipeline.run import (
    PipelineResult,
    import_data,
    plan,
    run_pipeline,
    summary_lines,
    validate_inputs,
)

__all__ = [
    "STAGES",
    "PipelineConfig",
    "PipelineResult",
    "import_data",
    "load_pipeline_config",
    "plan",
    "rlhf_pipeline",
    "run_pipeline",
    "summary_lines",
    "validate_inputs",
]
