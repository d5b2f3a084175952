"""`rlhfkit infer`: bulk inference, one prediction per prompt of a dataset.

The model is a model reference, a plain Hugging Face folder, a LoRA adapter folder, or an
RL run directory (its merged `model/`, else its `policy/` adapter on the run's base). A run
directory also supplies the instruction and sequence lengths it was trained with, unless
they are given.

Output rows are the input rows, every field kept, with `prediction` added, and
`prediction_ended`: true where the model ended its answer, false where it was cut at
`target_sequence_length` tokens. The file is
itself a prompt dataset, so graders read its fields as `{{item.FIELD}}` and `rlhfkit score`
and `rlhfkit sxs` read it directly. Finished batches go to `OUT.partial` as they complete;
a killed run started again with the same settings continues from there, and `OUT`
appears, whole, only at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import seeding
from rlhfkit.config import build_config, check, param, parse_overrides, read_yaml, to_dict
from rlhfkit.data.config import DATA_FIELDS, DataConfig
from rlhfkit.data.formats import dropped_rows_path, load_dataset, record_dropped
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import PreferenceRecord
from rlhfkit.errors import ModelLoadError
from rlhfkit.fileio import Journal, atomic_write_jsonl, check_output_path

logger = logging.getLogger(__name__)

PREDICTION = "prediction"
ENDED = "prediction_ended"
"""Whether the model ended the answer (False: cut at target_sequence_length)."""


@dataclass
class InferConfig(DataConfig):
    """Bulk inference (`rlhfkit infer`)."""

    model: str | None = param(
        None,
        "Model that answers: a model reference or folder, a LoRA adapter folder, or an RL "
        "run directory (its merged model, else its policy adapter on the run's base); "
        "default: large_model_reference.",
    )
    prompt_dataset: str | None = param(
        None, "Prompts to answer (any prompt format, or a preference file's prompts)."
    )
    out: str | None = param(None, "Output .jsonl: every input row with `prediction` added.")
    batch_size: int = param(16, "Prompts generated together.")
    temperature: float = param(0.0, "Sampling temperature; 0 answers greedily.")
    top_p: float = param(1.0, "Nucleus sampling mass (with temperature > 0).")
    top_k: int = param(0, "Sample from the k most likely tokens; 0 = no limit.")
    seed: int = param(0, "Random seed for sampling.")
    dtype: str = param("auto", "bf16, fp32 or auto.", choices=("auto", "bf16", "fp32"))
    device: str = param("auto", "cpu, cuda or auto.", choices=("auto", "cpu", "cuda"))

    def validate(self) -> None:
        super().validate()
        check(bool(self.prompt_dataset), "prompt_dataset", self.prompt_dataset, "is required")
        check(bool(self.out), "out", self.out, "is required: the output .jsonl file")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        check(self.temperature >= 0, "temperature", self.temperature, "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")


@dataclass
class InferResult:
    out: Path
    rows: int
    model: str
    resumed_rows: int
    dropped_rows: list[str] = field(default_factory=list)
    """One line when `bad_rows=skip` left prompt rows out (listed beside `out`)."""


@dataclass(frozen=True)
class ResolvedModel:
    """What `model` names: weights to load and, for an adapter, the base it goes on."""

    weights: str
    adapter: str | None = None
    run_config: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"{self.weights} + adapter {self.adapter}" if self.adapter else self.weights


def resolve_model(reference: str, base: str) -> ResolvedModel:
    """Turn a `model` value into weights (and an adapter), reading a run's config.

    Args:
        reference: the user's `model` value.
        base: the base model an adapter without a run config goes on.
    """
    path = Path(reference)
    if not path.is_dir():
        return ResolvedModel(reference)
    run_config = _run_config(path) or _run_config(path.parent)
    run_base = (run_config or {}).get("large_model_reference", base)
    if (path / "adapter_config.json").is_file():
        return ResolvedModel(run_base, str(path), run_config)
    if (path / "model" / "config.json").is_file():
        return ResolvedModel(str(path / "model"), None, run_config)
    if (path / "policy" / "adapter_config.json").is_file():
        return ResolvedModel(run_base, str(path / "policy"), run_config)
    if (path / "config.json").is_file():
        return ResolvedModel(reference, None, run_config)
    raise ModelLoadError(
        f"model={reference} is a folder but holds no model: expected a Hugging Face model "
        "(config.json), a LoRA adapter (adapter_config.json) or an RL run directory "
        "(model/ or policy/)"
    )


def _run_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.yaml"
    return read_yaml(path) if path.is_file() else None


def load_infer_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> InferConfig:
    """Defaults < the run's settings (when `model` is a run directory) < file < overrides."""
    values: dict[str, Any] = read_yaml(path) if path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values.update(overrides or {})
    if values.get("model"):
        resolved = resolve_model(str(values["model"]), str(values.get("large_model_reference")))
        for key in DATA_FIELDS:  # a run's encoding applies unless given
            if resolved.run_config and key in resolved.run_config and key not in values:
                values[key] = resolved.run_config[key]
    return build_config(InferConfig, values, source=str(path) if path else "overrides")


def load_for_inference(resolved: ResolvedModel, dtype: str = "auto", device: str = "auto"):
    """The model in eval mode, an adapter merged into its base (in fp32, then cast)."""
    from rlhfkit.models.loading import load_model, resolve_device, resolve_dtype

    if resolved.adapter is None:
        return load_model(resolved.weights, dtype=dtype, device=device)
    from rlhfkit.models.policy import merge_adapter

    target = resolve_device(device)
    merged = merge_adapter(resolved.weights, resolved.adapter)
    return merged.to(device=target, dtype=resolve_dtype(dtype, target)).eval()


def infer(config: InferConfig) -> InferResult:
    """Answer every prompt of `config.prompt_dataset`; write the rows with `prediction`."""
    from rlhfkit.models.loading import load_tokenizer

    check_output_path(config.out)  # before any work: a bad path fails now, not at the end
    # step 1. prompts, in file order, and the raw rows they came from
    dataset = load_dataset(config.prompt_dataset, bad_rows=config.bad_rows)
    records = [r.prompt_record() if isinstance(r, PreferenceRecord) else r for r in dataset.records]
    raw = dataset.rows
    # step 2. the model and the prompt encoding
    resolved = resolve_model(
        config.model or config.large_model_reference, config.large_model_reference
    )
    tokenizer = load_tokenizer(resolved.weights)
    encoder = PromptEncoder.from_settings(tokenizer, config)
    prompt_ids = [encoder.encode_prompt(r.messages).ids for r in records]
    # step 3. continue a killed run with the same settings
    out = Path(config.out)
    journal = Journal(f"{out}.partial", _fingerprint(config, resolved, prompt_ids))
    done = {
        i: {k: row[k] for k in (PREDICTION, ENDED) if k in row} for i, row in journal.open().items()
    }
    resumed = len(done)
    if resumed:
        logger.info("continuing %s: %d of %d prompts already answered", out, resumed, len(records))
    # step 4. generate in batches of similar prompt lengths (little padding)
    todo = sorted(
        (i for i in range(len(records)) if i not in done), key=lambda i: -len(prompt_ids[i])
    )
    if todo:
        _generate(config, resolved, tokenizer, prompt_ids, todo, done, journal)
    # step 5. the whole file, atomically, in input order
    rows = [{**raw[i], **done[i]} for i in range(len(records))]
    atomic_write_jsonl(out, rows)
    journal.remove()
    dropped = record_dropped({config.prompt_dataset: dataset}, dropped_rows_path(out))
    return InferResult(out, len(rows), resolved.describe(), resumed, dropped)


def _generate(
    config: InferConfig,
    resolved: ResolvedModel,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    todo: list[int],
    done: dict[int, dict[str, Any]],
    journal: Journal,
) -> None:
    """Answer the prompts `todo` in batches, into `done` and the journal as each ends."""
    from rlhfkit.models.generate import generate_answers
    from rlhfkit.progress import progress_bar

    model = load_for_inference(resolved, config.dtype, config.device)
    logger.info("infer: %s on %d prompts", resolved.describe(), len(todo))
    bar = progress_bar(len(prompt_ids), len(done), "infer", unit="prompt")
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        # seeded by the batch's first row: the same draws after a resume
        seeding.seed_global(seeding.infer_batch(config.seed, batch[0]))
        answers = generate_answers(
            model,
            tokenizer,
            [prompt_ids[i] for i in batch],
            max_new_tokens=config.target_sequence_length,
            do_sample=config.temperature > 0,
            temperature=config.temperature or 1.0,
            top_p=config.top_p,
            top_k=config.top_k,
        )
        for i, answer in zip(batch, answers, strict=True):
            done[i] = {PREDICTION: answer.text, ENDED: answer.ended}
        journal.append((i, done[i]) for i in batch)
        bar.update(len(batch))
    bar.close()


def _fingerprint(config: InferConfig, resolved: ResolvedModel, prompt_ids: list[list[int]]) -> str:
    settings = {k: v for k, v in to_dict(config).items() if k not in ("out", "batch_size")}
    digest = hashlib.sha256(json.dumps([settings, resolved.describe()], sort_keys=True).encode())
    digest.update(json.dumps(prompt_ids).encode())
    return digest.hexdigest()
