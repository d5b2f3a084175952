"""Reward model: a language-model trunk (LoRA or fully trainable) and a scalar head.

The head reads the final hidden states of each response: those of its last token
(`pooling="last"`) or their mean over the response's tokens (`pooling="mean"`). With
`trunk_layers=N` the trunk keeps only its first N decoder layers (and its final norm), so
the head reads layer N's output, and training and scoring cost about N / layers as much.
Responses that share a prompt are scored with the prompt computed once. In training the
prompt and its responses are packed into one row with a block mask; when scoring without
gradients (and for attention implementations that take no such mask) the responses run on
the prompt's key/value cache, so a response's reward does not depend on its batch; see
`models.shared_prompt`. For long prompts and short answers this halves the work of
scoring a preference pair.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from rlhfkit import seeding
from rlhfkit.errors import ModelLoadError
from rlhfkit.fileio import atomic_path
from rlhfkit.models.generate import left_pad, padded_width
from rlhfkit.models.loading import trainable_parameters, under
from rlhfkit.models.lora import lora_layers, uncast_lora_inputs
from rlhfkit.models.shared_prompt import (
    packed_forward,
    shared_prompt_forward,
    supports_packing,
)

REWARD_CONFIG_FILE = "rlhfkit_reward.json"
HEAD_FILE = "head.safetensors"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear layer of a Llama decoder block: the default LoRA targets."""
POOLINGS = ("last", "mean")
"""What the head reads: the last response token's final hidden state, or the mean of the
response tokens' final hidden states."""


@dataclass
class RewardModelSpec:
    """What is needed to rebuild a saved reward model (written as rlhfkit_reward.json)."""

    base_model: str
    full_finetune: bool = False
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    instruction: str | None = None
    prompt_sequence_length: int = 512
    target_sequence_length: int = 64
    use_chat_template: bool = True
    pooling: str = "last"
    trunk_layers: int = 0
    """Decoder layers kept (the first N); 0: all of them."""


@dataclass
class ResponseBatch:
    """Prompts and the responses to score against them (k responses per prompt).

    Attributes:
        prompt_ids: left-padded prompts. Shape: (B, P)
        prompt_mask: 1 on prompt tokens. Shape: (B, P)
        response_ids: right-padded responses, the k answers of prompt b at rows
            b*k .. b*k+k-1. Shape: (B*k, A)
        response_mask: 1 on response tokens. Shape: (B*k, A)
        per_prompt: k, the number of responses per prompt.
        multiple: widths are rounded up to a multiple of this (also a packed row's).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    per_prompt: int
    multiple: int = 1

    @classmethod
    def build(
        cls,
        prompts: list[list[int]],
        responses: list[list[int]],
        pad_id: int,
        multiple: int = 1,
    ):
        """Pad token lists into a batch; `responses` holds k answers per prompt, in order.

        Prompt and response widths are rounded up to a multiple of `multiple`.
        """
        per_prompt = len(responses) // len(prompts)
        if per_prompt * len(prompts) != len(responses) or per_prompt < 1:
            raise ValueError("responses must hold the same number of answers for every prompt")
        prompt_ids, prompt_mask = left_pad(prompts, pad_id, multiple)
        width = padded_width([len(r) for r in responses], multiple)
        response_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
        response_mask = torch.zeros((len(responses), width), dtype=torch.long)
        for row, ids in enumerate(responses):
            response_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            response_mask[row, : len(ids)] = 1
        return cls(prompt_ids, prompt_mask, response_ids, response_mask, per_prompt, multiple)

    def to(self, device: torch.device) -> ResponseBatch:
        return ResponseBatch(
            self.prompt_ids.to(device),
            self.prompt_mask.to(device),
            self.response_ids.to(device),
            self.response_mask.to(device),
            self.per_prompt,
            self.multiple,
        )

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens the trunk processes."""
        return int(self.prompt_mask.sum() + self.response_mask.sum())


class RewardModel(nn.Module):
    """Scalar reward for (prompt, response) pairs.

    Args:
        backbone: a causal language model, possibly wrapped by peft (LoRA).
        head: linear layer from the hidden size to 1 output.
        spec: how the model was built, for saving.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Linear,
        spec: RewardModelSpec,
        adapter_name: str | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spec = spec
        self.adapter_name = adapter_name
        """When set, the backbone is shared (e.g. with a policy) and this adapter is switched
        on for scoring only."""
        self._lora_layers = lora_layers(backbone)

    @property
    def trunk(self) -> nn.Module:
        """The decoder stack (no language-model head) that produces hidden states."""
        base = self.backbone
        if hasattr(base, "get_base_model"):
            base = base.get_base_model()
        return getattr(base, base.base_model_prefix)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, batch: ResponseBatch) -> torch.Tensor:
        """Rewards of every response, prompt computed once per prompt.

        Returns:
            rewards in fp32. Shape: (B*k,)
        """
        final = self.features(batch)
        # the head runs in fp32 even under autocast: bf16 rewards would round distinct
        # answers to the same value (a tie) and differ from machine to machine
        with torch.autocast(final.device.type, enabled=False):
            return self.head(final).squeeze(-1)

    def features(self, batch: ResponseBatch) -> torch.Tensor:
        """What the head reads for every response (see `POOLINGS`), in fp32.

        Returns:
            pooled final hidden states. Shape: (B*k, H)
        """
        if self.adapter_name is None:
            return self._features(batch)
        with active_adapter(self.backbone, self.adapter_name):
            return self._features(batch)

    def _features(self, batch: ResponseBatch) -> torch.Tensor:
        trunk = self.trunk
        tensors = (batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
        with uncast_lora_inputs(self._lora_layers, self.device):
            # training: one packed pass where the attention takes a block mask (faster);
            # scoring: the key/value-cache pass, whose reward for a response does not
            # depend on the other responses in the batch, not even by bf16 rounding
            if torch.is_grad_enabled() and supports_packing(trunk):
                hidden = packed_forward(trunk, *tensors, multiple=batch.multiple)[1]
            else:
                hidden = shared_prompt_forward(trunk, *tensors)[1]  # (B*k, A, H)
        if self.spec.pooling == "mean":
            mask = batch.response_mask.unsqueeze(-1).float()  # (B*k, A, 1)
            return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        last = (batch.response_mask.sum(1) - 1).clamp(min=0)  # (B*k,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def save(self, folder: str | Path, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write the adapter (or full weights), the head and the spec atomically.

        `weights`: the full trainable weights by name, gathered when the model's own are
        sharded over the ranks of a run (default: the model's own).
        """
        from safetensors.torch import save_file

        weights = weights or trainable_parameters(self)
        backbone = under(weights, "backbone.")
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            if self.spec.full_finetune:
                self.backbone.save_pretrained(tmp / "model", state_dict=backbone)
            else:
                self.backbone.save_pretrained(tmp / "adapter", state_dict=backbone)
            head = {k: v.detach().cpu().contiguous() for k, v in under(weights, "head.").items()}
            save_file(head, tmp / HEAD_FILE)
            (tmp / REWARD_CONFIG_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")


def build_reward_model(
    spec: RewardModelSpec,
    dtype: str = "auto",
    device: str = "auto",
    head_std: float = 0.0,
    seed: int = 0,
) -> RewardModel:
    """A fresh reward model: the base model, a LoRA adapter (or full weights) and a head.

    Args:
        spec: base model, LoRA settings and prompt encoding.
        dtype: weights of the frozen base (`auto`, `bf16`, `fp32`); full fine-tuning keeps
            fp32 master weights and trains under bf16 autocast instead.
        device: `auto`, `cpu` or `cuda`.
        head_std: standard deviation of the head's initial weights (0: zeros, so every
            reward starts at 0 and the first gradients go to the head and adapter alike).
        seed: seeds the LoRA and head initialisation.
    """
    from peft import LoraConfig, get_peft_model

    from rlhfkit.models.loading import keep_first_layers, load_model

    generator_state = torch.random.get_rng_state()
    seeding.seed_global(seeding.init(seed))
    try:
        lm = load_model(
            spec.base_model, dtype="fp32" if spec.full_finetune else dtype, device=device
        )
        if spec.trunk_layers:
            keep_first_layers(lm, spec.trunk_layers)
        lm.config.use_cache = True
        if spec.full_finetune:
            backbone = lm
            backbone.requires_grad_(True)
            _freeze_unused_lm_head(backbone)
        else:
            lora = LoraConfig(
                r=spec.lora_rank,
                lora_alpha=spec.lora_alpha,
                lora_dropout=0.0,
                target_modules=list(spec.lora_targets),
                bias="none",
            )
            backbone = get_peft_model(lm, lora)
        hidden = lm.config.hidden_size
        head = nn.Linear(hidden, 1, device=lm.device, dtype=torch.float32)
        nn.init.normal_(head.weight, std=head_std) if head_std > 0 else nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    finally:
        torch.random.set_rng_state(generator_state)
    return RewardModel(backbone, head, spec)


def _freeze_unused_lm_head(lm: nn.Module) -> None:
    """The language-model head is never used for rewards; untie-safe freeze when separate."""
    output = lm.get_output_embeddings()
    if output is not None and output.weight is not lm.get_input_embeddings().weight:
        output.requires_grad_(False)


@contextmanager
def active_adapter(model: nn.Module, name: str):
    """Switch a peft model to adapter `name` for the block, then back.

    peft makes the active adapter trainable when switching; which parameters require
    gradients is restored on the way out, so a policy being trained stays trainable.
    """
    previous = model.active_adapter
    if previous == name:
        yield
        return
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for n, p in model.named_parameters():
            p.requires_grad_(trainable[n])


def read_reward_spec(folder: str | Path) -> RewardModelSpec:
    """The spec of a saved reward model; a clear error when `folder` is not one."""
    folder = Path(folder)
    config_path = folder / REWARD_CONFIG_FILE
    if not config_path.is_file():
        raise ModelLoadError(
            f"{folder} is not a reward-model folder (no {REWARD_CONFIG_FILE}, no "
            "transformers sequence-classification model with one label, no OpenRLHF reward "
            "model); give the reward_model folder that `rlhfkit train-reward` wrote in its "
            "output_dir, a folder saved by AutoModelForSequenceClassification (num_labels=1), "
            "or the folder OpenRLHF's train_rm saved"
        )
    return RewardModelSpec(**json.loads(config_path.read_text()))


def _load_head(folder: Path, hidden: int, device: torch.device) -> nn.Linear:
    from safetensors.torch import load_file

    head = nn.Linear(hidden, 1, dtype=torch.float32)
    head.load_state_dict(load_file(folder / HEAD_FILE))
    return head.to(device).requires_grad_(False)


def attach_reward_model(folder: str | Path, backbone: nn.Module) -> RewardModel:
    """Load a LoRA reward model onto an existing peft model with the same base weights.

    The reward adapter is added to `backbone` as adapter "reward": no second copy of the
    base weights. The caller checks that the bases match (see `read_reward_spec`).
    """
    folder = Path(folder)
    spec = read_reward_spec(folder)
    if spec.full_finetune or spec.trunk_layers:
        raise ValueError(
            "a fully fine-tuned reward model, or one that keeps only some layers, has its "
            "own weights: load it alone"
        )
    backbone.load_adapter(str(folder / "adapter"), adapter_name="reward", is_trainable=False)
    head = _load_head(folder, backbone.config.hidden_size, backbone.device)
    return RewardModel(backbone, head, spec, adapter_name="reward").eval()


def load_reward_model(folder: str | Path, dtype: str = "auto", device: str = "auto") -> RewardModel:
    """Load a reward model written by `RewardModel.save` (train-reward's output)."""
    from peft import PeftModel

    from rlhfkit.models.loading import keep_first_layers, load_model

    folder = Path(folder)
    spec = read_reward_spec(folder)
    if spec.full_finetune:  # its saved config already says how many layers it has
        backbone = load_model(str(folder / "model"), dtype=dtype, device=device)
    else:
        base = load_model(spec.base_model, dtype=dtype, device=device)
        if spec.trunk_layers:
            keep_first_layers(base, spec.trunk_layers)
        backbone = PeftModel.from_pretrained(base, folder / "adapter")
    head = _load_head(folder, backbone.config.hidden_size, backbone.device)
    model = RewardModel(backbone, head, spec)
    model.requires_grad_(False)
    return model.eval()
