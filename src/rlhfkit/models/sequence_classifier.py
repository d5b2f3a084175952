"""Reward models in other tools' formats: transformers' `AutoModelForSequenceClassification`
(one label) and OpenRLHF's value-head reward model.

`export_reward_model` writes an rlhfkit reward model as a sequence-classification folder
(LoRA merged into the weights, the head as the `score` layer, the tokenizer and its chat
template beside them), so transformers, TRL and other tools can load it.
`SequenceClassifierScorer` scores answers with such a folder, the way it was trained:

- a folder `export_reward_model` wrote (its config holds `rlhfkit_input`): the prompt
  encoded as rlhfkit encodes it (instruction, chat template with the generation prompt,
  lengths), then the answer's tokens and the end token; the score of the last token plus
  the head's bias (kept in the config; the `score` layer has none). These are rlhfkit's own
  rewards (`RewardTextScorer`), up to float rounding.
- any other sequence-classification folder (e.g. TRL's RewardTrainer output): the
  conversation with the answer as the assistant turn, rendered by the tokenizer's chat
  template (the prompt text and the answer when it has none); the score of the last token.
- an OpenRLHF reward model (`train_rm` output: the decoder's weights, a one-output value
  head named by `value_head_prefix`, `normalize_reward`/`mean`/`std` in the config): the
  text OpenRLHF's reward dataset builds (the rendered conversation, trailing newlines cut,
  the end token appended unless it ends with it, the last token forced to the end token),
  the value head on the last token, then `(reward - mean) / std` when `normalize_reward`
  is set, as OpenRLHF's model does in evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from rlhfkit.errors import ConfigError, ModelLoadError
from rlhfkit.fileio import atomic_path

EXPORT_KEY = "rlhfkit_input"
"""Config key of an exported folder: how rlhfkit encodes a prompt for this model."""
PAD_TOKEN = "<|endoftext|>"
"""The exported tokenizer's padding token. transformers finds a sequence's last token by
the first padding token id; the bundled model pads with its end-of-turn token, which ends
every scored answer, so the export pads with a token that never occurs in chat text."""
ENCODING_FIELDS = ("instruction", "prompt_sequence_length", "target_sequence_length")


OPENRLHF_HEADS = ("score", "value_head")
"""Names OpenRLHF gives the value head when the config does not say (`value_head_prefix`:
`score` in current versions, `value_head` in older ones)."""


def _read_config(folder: str | Path) -> dict | None:
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def reward_folder_format(folder: str | Path) -> str | None:
    """`classifier` for a transformers sequence-classification folder with one label,
    `openrlhf` for an OpenRLHF reward model (its config carries `normalize_reward` or
    `value_head_prefix`), None for anything else."""
    config = _read_config(folder)
    if config is None:
        return None
    classes = [str(c) for c in config.get("architectures") or []]
    labels = config.get("num_labels", len(config.get("id2label") or {0: None, 1: None}))
    if any(c.endswith("ForSequenceClassification") for c in classes) and labels == 1:
        return "classifier"
    if "normalize_reward" in config or "value_head_prefix" in config:
        return "openrlhf"
    return None


def is_transformers_reward_folder(folder: str | Path) -> bool:
    """Whether `folder` holds a reward model in another tool's format (see
    `reward_folder_format`), scored by `SequenceClassifierScorer`."""
    return reward_folder_format(folder) is not None


def _read_weight(folder: Path, name: str) -> torch.Tensor | None:
    """One tensor of a saved model (safetensors, sharded or not, or pytorch_model.bin)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shard = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).get(name)
        files = [folder / shard] if shard else []
    else:
        files = [folder / "model.safetensors"]
    for file in files:
        if file.is_file():
            with safe_open(file, framework="pt") as weights:
                names = set(weights.keys())  # a safetensors handle has no `in`
                return weights.get_tensor(name) if name in names else None
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True, mmap=True).get(name)
    return None


@dataclass
class ExportResult:
    out: Path
    layers: int
    head_bias: float
    """The rlhfkit head's bias: the `score` layer has none, so plain transformers scores
    rlhfkit's rewards minus this (0 unless reward centering moved it; differences are
    unchanged); rlhfkit adds it back when it reads the folder."""
    pad_token: str


def export_reward_model(reward_dir: str | Path, out_dir: str | Path, dtype: str = "fp32"):
    """Write the reward model in `reward_dir` (train-reward's reward_model/) as a plain
    `AutoModelForSequenceClassification` folder in `out_dir`; returns what was written."""
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.models.loading import load_tokenizer
    from rlhfkit.models.reward import load_reward_model

    model = load_reward_model(reward_dir, dtype="fp32", device="cpu")
    spec = model.spec
    if spec.pooling != "last":
        raise ConfigError(
            f"{reward_dir} reads the mean of the answer's hidden states (head_pooling=mean); "
            "a sequence-classification model reads the last token only, so it cannot be "
            "exported. Train with head_pooling=last to export"
        )
    backbone = model.backbone
    lm = backbone.merge_and_unload() if hasattr(backbone, "merge_and_unload") else backbone
    tokenizer = load_tokenizer(spec.base_model)
    pad_id = tokenizer.get_vocab().get(PAD_TOKEN)
    if pad_id is None or pad_id == tokenizer.eos_token_id:
        raise ConfigError(
            f"the tokenizer of {spec.base_model} has no {PAD_TOKEN} token to pad with; "
            "exporting this model's reward model is not supported"
        )
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.architectures = [
        lm.__class__.__name__.replace("ForCausalLM", "ForSequenceClassification")
    ]
    config.num_labels = 1
    config.pad_token_id = pad_id
    config.use_cache = False
    encoding = {k: getattr(spec, k) for k in (*ENCODING_FIELDS, "use_chat_template")}
    encoding["head_bias"] = float(model.head.bias.item())  # the score layer has no bias
    setattr(config, EXPORT_KEY, encoding)
    classifier = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    trunk = getattr(lm, lm.base_model_prefix)
    state = {f"{lm.base_model_prefix}.{k}": v for k, v in trunk.state_dict().items()}
    state["score.weight"] = model.head.weight.detach().to(torch.float32)
    missing, unexpected = classifier.load_state_dict(state, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing or unexpected:
        raise ModelLoadError(f"export: weights that do not fit: {missing + unexpected}")
    tokenizer.pad_token = PAD_TOKEN
    with atomic_path(out_dir) as tmp:
        classifier.to({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return ExportResult(
        Path(out_dir), config.num_hidden_layers, float(model.head.bias.item()), PAD_TOKEN
    )


class SequenceClassifierScorer:
    """Rewards from another tool's reward-model folder (`reward_folder_format`); `score` as
    `RewardTextScorer.score`."""

    def __init__(self, folder: str | Path, dtype: str = "auto", device: str = "auto"):
        from rlhfkit.data.prompts import PromptEncoder
        from rlhfkit.models.loading import load_tokenizer, resolve_device, resolve_dtype

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        self.tokenizer = load_tokenizer(str(folder))
        self.format = reward_folder_format(folder)
        if self.format == "openrlhf":
            self.trunk, self.head, config = _load_openrlhf(Path(folder), torch_dtype)
        else:
            self.trunk, self.head, config = _load_classifier(Path(folder), torch_dtype)
        # the head runs in fp32: bf16 rewards would round distinct answers to ties
        self.head.float().to(torch_device)
        self.trunk = self.trunk.to(torch_device).eval()
        settings = getattr(config, EXPORT_KEY, None)
        self.encoder = (
            PromptEncoder.from_settings(self.tokenizer, SimpleNamespace(**settings))
            if settings
            else None
        )
        self.bias = float((settings or {}).get("head_bias", 0.0))
        """An exported rlhfkit head's bias, added back: rlhfkit's own rewards."""
        normalize = self.format == "openrlhf" and getattr(config, "normalize_reward", False)
        self.mean = float(getattr(config, "mean", 0.0)) if normalize else 0.0
        self.std = float(getattr(config, "std", 1.0)) if normalize else 1.0
        """OpenRLHF's reward normalization (evaluation mode): (reward - mean) / std."""

    @torch.no_grad()
    def score(
        self,
        prompts: list[tuple],
        responses: list[list[str]],
        batch_size: int = 16,
        ended: list[list[bool]] | None = None,
    ) -> list[list[float]]:
        """Rewards of k responses per prompt (message tuples), fp32. Shape: (B, k)"""
        sequences = [
            self._encode(prompt, answer, ended[b][j] if ended else True)
            for b, (prompt, group) in enumerate(zip(prompts, responses, strict=True))
            for j, answer in enumerate(group)
        ]
        flat: list[float] = []
        for start in range(0, len(sequences), batch_size):
            flat += self._rewards(sequences[start : start + batch_size])
        out, at = [], 0
        for group in responses:
            out.append(flat[at : at + len(group)])
            at += len(group)
        return out

    def _encode(self, prompt: tuple, answer: str, ended: bool) -> list[int]:
        if self.encoder is not None:  # exported by rlhfkit: its own encoding
            response = self.encoder.encode_response(answer, add_eos=ended).ids
            return self.encoder.encode_prompt(prompt).ids + (
                response or [self.tokenizer.eos_token_id]
            )
        turns = [{"role": m.role, "content": m.content} for m in prompt]
        if getattr(self.tokenizer, "chat_template", None):
            conversation = [*turns, {"role": "assistant", "content": answer}]
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
        else:
            text = "\n".join(t["content"] for t in turns) + answer
        if self.format != "openrlhf":
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # OpenRLHF's reward dataset: newlines cut, the end token appended, and the last
        # token made the end token whatever it was
        eos = self.tokenizer.eos_token
        text = text.rstrip("\n")
        if not text.endswith(eos):
            text += " " + eos
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids[-1] = self.tokenizer.eos_token_id
        return ids

    def _rewards(self, sequences: list[list[int]]) -> list[float]:
        """The head on each sequence's last token (right-padded batch)."""
        width = max(len(s) for s in sequences)
        ids = torch.zeros((len(sequences), width), dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        device = self.head.weight.device
        hidden = self.trunk(input_ids=ids.to(device), attention_mask=mask.to(device))
        last = (mask.sum(1) - 1).to(device)
        final = hidden.last_hidden_state[torch.arange(len(sequences), device=device), last]
        with torch.autocast(device.type, enabled=False):
            rewards = self.head(final.float()).float()[:, 0] + self.bias
            return ((rewards - self.mean) / self.std).cpu().tolist()


def _load_classifier(folder: Path, dtype: torch.dtype):
    """The trunk, `score` layer and config of a sequence-classification folder."""
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the reward model in {folder}: {exc}") from None
    head = getattr(model, "score", None)
    if not isinstance(head, torch.nn.Linear):
        raise ModelLoadError(
            f"{folder}: a {type(model).__name__} has no `score` layer; rlhfkit scores "
            "decoder reward models (Llama, Qwen, Mistral, ... ForSequenceClassification)"
        )
    return getattr(model, model.base_model_prefix), head, model.config


def _load_openrlhf(folder: Path, dtype: torch.dtype):
    """The trunk, value head and config of an OpenRLHF reward model: the decoder loads as
    transformers' base model (`AutoModel`), the head from its weight in the files."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    config = AutoConfig.from_pretrained(folder)
    classes = [str(c) for c in getattr(config, "architectures", None) or []]
    if any("Critic" in c for c in classes):
        raise ModelLoadError(
            f"{folder} is an OpenRLHF critic ({', '.join(classes)}), which values every token "
            "of an answer; give the reward model (train_rm's save_path) instead"
        )
    prefix = getattr(config, "value_head_prefix", None)
    names = [prefix] if prefix else list(OPENRLHF_HEADS)
    weight = None
    for name in names:
        weight = _read_weight(folder, f"{name}.weight")
        if weight is not None:
            break
    if weight is None or weight.shape != (1, config.hidden_size):
        raise ModelLoadError(
            f"{folder}: its config is OpenRLHF's, but no one-output value head "
            f"({' or '.join(f'{n}.weight' for n in names)}, shape (1, {config.hidden_size})) "
            "is in its weights; give the folder OpenRLHF's train_rm saved"
        )
    # the files hold the head beside the decoder: transformers names it unused, which it is
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        trunk = AutoModel.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the reward model in {folder}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(weight.float())
    return trunk, head, config
