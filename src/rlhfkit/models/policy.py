"""The policy for RL: a base language model with a LoRA adapter and an optional value head.

One copy of the base weights serves every role:
- policy: the base with adapter "policy" switched on;
- reference: the same base with every adapter switched off (`reference_logprobs`);
- critic: a linear value head on the policy's final hidden states (a shared trunk: one
  forward gives log-probabilities and values; the value loss also trains the adapter);
- reward: a LoRA reward model on the same base is attached as adapter "reward"
  (`rlhfkit.models.reward.attach_reward_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from rlhfkit import seeding
from rlhfkit.fileio import atomic_path
from rlhfkit.models.decoding import ReservedCache, can_reserve, generate_tokens
from rlhfkit.models.generate import left_pad
from rlhfkit.models.loading import trainable_parameters, under
from rlhfkit.models.lora import lora_layers, uncast_lora_inputs
from rlhfkit.models.shared_prompt import packed_forward, shared_prompt_forward, supports_packing

if TYPE_CHECKING:
    from rlhfkit.models.reward import ResponseBatch

POLICY_ADAPTER = "policy"
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class Rollout:
    """Prompts and the answers sampled for them.

    Attributes:
        query_ids: left-padded prompts. Shape: (B, P)
        query_mask: 1 on prompt tokens. Shape: (B, P)
        response_ids: right-padded answers, cut after the first end-of-sequence token.
            Shape: (B, A)
        response_mask: 1 on answer tokens (the end-of-sequence token included). Shape: (B, A)
        ended: whether each answer produced the end-of-sequence token. Shape: (B,)
        group: rows come in runs of `group` answers to the same prompt (1: no sharing);
            the prompt of such a run is computed once (see `shared_prompt_forward`).
    """

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor
    group: int = 1

    def rows(self, index: torch.Tensor | slice, trim: bool = True) -> Rollout:
        """The sub-rollout of the given rows (whole groups, in order); with `trim`, cut to
        its own longest prompt and answer (less padding to compute)."""
        query_mask = self.query_mask[index]
        response_mask = self.response_mask[index]
        start, width = 0, response_mask.shape[1]
        if trim:
            start = int((query_mask.sum(0) > 0).nonzero()[0]) if query_mask.any() else 0
            width = int(response_mask.sum(1).max())
        return Rollout(
            self.query_ids[index][:, start:],
            query_mask[:, start:],
            self.response_ids[index][:, :width],
            response_mask[:, :width],
            self.ended[index],
            self.group,
        )


class PolicyOutputs(NamedTuple):
    """What a forward pass of the policy over a rollout gives, per answer token.

    Attributes:
        logprobs: log-probabilities of the sampled tokens (fp32, with their graph when
            gradients are on). Shape: (B, A)
        values: the critic's value of each position, or None without a value head. (B, A)
        entropy: the policy's entropy at each position, or None unless asked for. (B, A)
    """

    logprobs: torch.Tensor
    values: torch.Tensor | None
    entropy: torch.Tensor | None


class PolicyModel(nn.Module):
    """Policy, reference and critic on one set of base weights.

    Args:
        backbone: a peft model whose adapter "policy" is trained.
        value_head: linear layer from the hidden size to 1 (fp32), or None without a critic.
    """

    def __init__(self, backbone: nn.Module, value_head: nn.Linear | None):
        super().__init__()
        self.backbone = backbone
        self.value_head = value_head
        self._lora_layers = lora_layers(backbone)
        self.packed = False
        """Whether passes over several answers to one prompt pack them into one row
        (`packed_forward`) instead of running them on the prompt's key/value cache: set
        where the decoder blocks are compiled, which run eagerly on a cache."""

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def language_model(self) -> nn.Module:
        """The causal language model (LoRA layers injected) under the peft wrapper, or the
        backbone itself when every weight trains (no adapter)."""
        backbone = self.backbone
        return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone

    @property
    def has_adapter(self) -> bool:
        """Whether the policy is a LoRA adapter on frozen base weights."""
        return hasattr(self.backbone, "disable_adapter")

    @torch.no_grad()
    def sample(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        eos_id: int,
        pad_id: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = True,
        per_prompt: int = 1,
    ) -> Rollout:
        """Sample `per_prompt` answers per prompt with the KV cache, stopping at
        end-of-sequence. With several answers per prompt the prompt is computed once and its
        cache shared; the rollout's rows are then the answers, prompt by prompt."""
        query_ids, query_mask = left_pad(prompts, pad_id)  # (B, P)
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
        was_training = self.training
        self.eval()
        device = self.device
        extra = {}
        with uncast_lora_inputs(self._lora_layers, device):
            if per_prompt > 1 and query_ids.shape[1] > 1:
                # every prompt token but the last, once per prompt; generate feeds the last
                extra["cache"] = self._prefill(
                    query_ids[:, :-1], query_mask[:, :-1], per_prompt, max_new_tokens
                )
            query_ids = query_ids.repeat_interleave(per_prompt, 0)  # (B*k, P)
            query_mask = query_mask.repeat_interleave(per_prompt, 0)
            out = generate_tokens(
                self.backbone,
                query_ids.to(device),
                query_mask.to(device),
                max_new_tokens,
                do_sample=do_sample,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
                **(sampling if do_sample else {}),
                **extra,
            )
        self.train(was_training)
        generated = out[:, query_ids.shape[1] :].cpu()  # (B*k, A)
        response_ids, response_mask, ended = cut_at_eos(generated, eos_id, pad_id)
        return Rollout(query_ids, query_mask, response_ids, response_mask, ended, per_prompt)

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, repeat: int, room: int):
        """The key/value cache of left-padded token ids, each row repeated `repeat` times,
        with room for `room` more tokens."""
        device = self.device
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = self.trunk(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            cache=ReservedCache(room + 1) if can_reserve(self.backbone, device) else None,
            use_cache=True,
        ).cache
        cache.batch_repeat_interleave(repeat)
        return cache

    @property
    def trunk(self) -> nn.Module:
        """The decoder stack (no language-model head)."""
        lm = self.language_model
        return getattr(lm, lm.base_model_prefix)

    def forward(
        self, rollout: Rollout, temperature: float = 1.0, with_entropy: bool = False
    ) -> PolicyOutputs:
        """Log-probabilities of the answer tokens under the policy, the critic's values and,
        optionally, the per-token entropy (see `PolicyOutputs`)."""
        with uncast_lora_inputs(self._lora_layers, self.device):
            hidden = self._response_hidden(rollout)
        logprobs, entropy = self._token_logprobs(
            hidden, rollout.response_ids, temperature, with_entropy
        )
        values = None
        if self.value_head is not None:
            values = self.value_head(hidden.float()).squeeze(-1)
        return PolicyOutputs(logprobs, values, entropy)

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
        """Log-probabilities of the answer tokens under the base model (adapters off)."""
        with self.backbone.disable_adapter():
            hidden = self._response_hidden(rollout)
            return self._token_logprobs(hidden, rollout.response_ids, temperature, False)[0]

    def response_logprobs(self, batch: ResponseBatch) -> torch.Tensor:
        """Log-probabilities of every response token given its prompt, the prompt computed
        once for its k responses: one packed pass with a block mask where the attention
        takes one, else the responses on the prompt's key/value cache
        (`rlhfkit.models.shared_prompt`).

        Returns:
            fp32 log-probabilities, 0 on padding. Shape: (B*k, A)
        """
        tensors = (batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
        with uncast_lora_inputs(self._lora_layers, self.device):
            if supports_packing(self.trunk):
                prompt_hidden, answer_hidden = packed_forward(
                    self.trunk, *tensors, multiple=batch.multiple
                )
            else:
                prompt_hidden, answer_hidden = shared_prompt_forward(self.trunk, *tensors)
        # the last prompt position predicts the first answer token (prompts are left-padded)
        first = prompt_hidden[:, -1:].repeat_interleave(batch.per_prompt, 0)  # (B*k, 1, H)
        hidden = torch.cat([first, answer_hidden[:, :-1]], 1)  # (B*k, A, H)
        logprobs = self._token_logprobs(hidden, batch.response_ids, 1.0, False)[0]
        return logprobs * batch.response_mask.to(logprobs.device)

    def _response_hidden(self, rollout: Rollout) -> torch.Tensor:
        """Final hidden states at the positions that predict each answer token. (B, A, H)"""
        device = self.device
        if rollout.group > 1:
            group = rollout.group
            forward = packed_forward if self.packed else shared_prompt_forward
            prompt_hidden, answer_hidden = forward(
                self.trunk,
                rollout.query_ids[::group].to(device),
                rollout.query_mask[::group].to(device),
                rollout.response_ids.to(device),
                rollout.response_mask.to(device),
            )
            # the last prompt position predicts the first answer token (prompts are left-padded)
            first = prompt_hidden[:, -1:].repeat_interleave(group, 0)  # (B, 1, H)
            return torch.cat([first, answer_hidden[:, :-1]], 1)
        ids = torch.cat([rollout.query_ids, rollout.response_ids], 1).to(device)
        mask = torch.cat([rollout.query_mask, rollout.response_mask], 1).to(device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        hidden = self.trunk(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        prompt_width, answer_width = rollout.query_ids.shape[1], rollout.response_ids.shape[1]
        return hidden[:, prompt_width - 1 : prompt_width + answer_width - 1]

    def _token_logprobs(
        self, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probabilities of `targets` (B, A) from the hidden states that predict them
        (B, A, H), and optionally the entropy at each position (`token_logprobs`)."""
        head = self.language_model.get_output_embeddings()
        return token_logprobs(
            hidden, head.weight, targets.to(hidden.device), temperature, with_entropy
        )

    def save(self, folder: str | Path, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write the policy adapter and the value head atomically.

        `weights`: the full trainable weights by name, gathered when the model's own are
        sharded over the ranks of a run (default: the model's own).
        """
        from safetensors.torch import save_file

        weights = weights or trainable_parameters(self)
        if not self.has_adapter:
            raise ValueError("a fully fine-tuned policy is written with `export_full`")
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            self.backbone.save_pretrained(
                tmp, selected_adapters=[POLICY_ADAPTER], state_dict=under(weights, "backbone.")
            )
            # peft writes a non-default adapter into a sub-folder named after it
            for path in (tmp / POLICY_ADAPTER).iterdir():
                path.rename(tmp / path.name)
            (tmp / POLICY_ADAPTER).rmdir()
            if self.value_head is not None:
                state = {
                    k: v.detach().cpu().contiguous()
                    for k, v in under(weights, "value_head.").items()
                }
                save_file(state, tmp / VALUE_HEAD_FILE)


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(hidden @ weight.T / temperature)[target] for every position, and
    optionally the entropy of each position's distribution (no gradient).

    The logits over the vocabulary are computed `chunk_tokens` positions at a time (default:
    all at once, which gives the very rounding of one output-layer product over the batch;
    a matrix product's rounding can depend on its row count), in fp32 from the output
    layer's product (in the autocast dtype under autocast), and not kept: the backward
    pass computes them again, for one more output-layer product. Autograd would keep the
    log-softmax (fp32, 100 MB for 8 answers of 64 tokens) through the trunk's backward.

    Args:
        hidden: final hidden states. Shape: (B, A, H)
        weight: the output layer's weight (no bias). Shape: (V, H)
        targets: token ids. Shape: (B, A)

    Returns:
        fp32 log-probabilities (B, A) and, when asked, fp32 entropies (B, A).
    """
    shape = targets.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
    else:
        dtype = torch.promote_types(hidden.dtype, weight.dtype)
    entropy = torch.empty(flat_targets.shape, device=hidden.device) if with_entropy else None
    chunk = chunk_tokens or max(len(flat_targets), 1)
    chosen = _TokenLogprobs.apply(
        flat_hidden, weight, flat_targets, temperature, dtype, entropy, chunk
    )
    return chosen.view(shape), None if entropy is None else entropy.view(shape)


def _chunk_log_softmax(
    hidden: torch.Tensor, weight: torch.Tensor, temperature: float, dtype: torch.dtype
) -> torch.Tensor:
    logits = torch.nn.functional.linear(hidden.to(dtype), weight.to(dtype)).float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


class _TokenLogprobs(torch.autograd.Function):
    """`token_logprobs` over flat positions; gradients flow to the hidden states only (the
    output layer is frozen)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, dtype, entropy, chunk):
        chosen = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, len(targets), chunk):
                part = slice(start, start + chunk)
                log_probs = _chunk_log_softmax(hidden[part], weight, temperature, dtype)
                chosen[part] = log_probs.gather(-1, targets[part, None]).squeeze(-1)
                if entropy is not None:
                    entropy[part] = -(log_probs.exp() * log_probs).sum(-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.dtype, ctx.chunk = temperature, dtype, chunk
        return chosen

    @staticmethod
    def backward(ctx, grad_chosen):
        hidden, weight, targets = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, len(targets), ctx.chunk):
                part = slice(start, start + ctx.chunk)
                log_probs = _chunk_log_softmax(hidden[part], weight, ctx.temperature, ctx.dtype)
                # d log_softmax(z)[t] / dz = onehot(t) - softmax(z)
                grad = log_probs.exp_().mul_(-grad_chosen[part, None])
                grad.scatter_add_(-1, targets[part, None], grad_chosen[part, None])
                if ctx.temperature != 1.0:
                    grad = grad / ctx.temperature
                grad_hidden[part] = (grad.to(ctx.dtype) @ weight.to(ctx.dtype)).to(hidden.dtype)
        return grad_hidden, None, None, None, None, None, None


def cut_at_eos(
    generated: torch.Tensor, eos_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each row up to and including its first end-of-sequence token.

    Returns:
        ids with padding after the end (B, A), the 0/1 mask of kept tokens (B, A), and
        whether each row ended (B,).
    """
    is_eos = generated == eos_id
    ended = is_eos.any(1)
    first = torch.where(ended, is_eos.int().argmax(1), generated.shape[1] - 1)
    keep = torch.arange(generated.shape[1])[None, :] <= first[:, None]
    ids = torch.where(keep, generated, torch.full_like(generated, pad_id))
    return ids, keep.long(), ended


def build_policy(
    base_model: str,
    lora_rank: int,
    lora_alpha: float,
    lora_targets: list[str],
    with_value_head: bool,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    full_finetune: bool = False,
) -> PolicyModel:
    """The base model with a fresh LoRA adapter "policy" (its update starts at zero, so the
    policy starts equal to the base) and a zero-initialised value head. With
    `full_finetune` every weight trains instead (fp32 master weights, trained under bf16
    autocast); there is then no adapter to switch off for the reference."""
    from peft import LoraConfig, get_peft_model

    from rlhfkit.models.loading import load_model

    generator_state = torch.random.get_rng_state()
    seeding.seed_global(seeding.init(seed))
    try:
        lm = load_model(base_model, dtype="fp32" if full_finetune else dtype, device=device)
        lm.config.use_cache = True
        if full_finetune:
            return PolicyModel(lm.requires_grad_(True), None)
        lora = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=0.0,
            target_modules=list(lora_targets),
            bias="none",
        )
        backbone = get_peft_model(lm, lora, adapter_name=POLICY_ADAPTER)
        head = None
        if with_value_head:
            head = nn.Linear(lm.config.hidden_size, 1, device=lm.device, dtype=torch.float32)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
    finally:
        torch.random.set_rng_state(generator_state)
    return PolicyModel(backbone, head)


def merge_adapter(base_model: str, adapter_dir: str | Path) -> nn.Module:
    """The base model with a LoRA adapter merged into its weights, in fp32 on the CPU (a
    small LoRA update would be lost to rounding in bf16); cast it afterwards."""
    from peft import PeftModel

    from rlhfkit.models.loading import load_model

    base = load_model(base_model, dtype="fp32", device="cpu")
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def export_merged(base_model: str, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA adapter into its base and write a plain Hugging Face model folder.

    The weights are saved in the dtype of the base checkpoint. The folder loads with plain
    `transformers.AutoModelForCausalLM.from_pretrained`; the tokenizer is written beside it.
    """
    from rlhfkit.models.loading import checkpoint_dtype, load_tokenizer

    merged = merge_adapter(base_model, adapter_dir).to(checkpoint_dtype(base_model))
    tokenizer = load_tokenizer(base_model)
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def export_full(
    policy: PolicyModel, base_model: str, weights: dict[str, torch.Tensor], out_dir: str | Path
) -> Path:
    """Write a fully fine-tuned policy as a plain Hugging Face model folder (weights in the
    base checkpoint's dtype, the tokenizer beside them). `weights`: its trainable weights
    by name (gathered when sharded)."""
    from rlhfkit.models.loading import checkpoint_dtype, load_tokenizer

    dtype = checkpoint_dtype(base_model)
    state = {k: v.detach().to("cpu", dtype) for k, v in under(weights, "backbone.").items()}
    with atomic_path(out_dir) as tmp:
        policy.backbone.save_pretrained(tmp, state_dict=state)
        load_tokenizer(base_model).save_pretrained(tmp)
    return Path(out_dir)
