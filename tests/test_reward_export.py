"""Reward models in transformers' format: rlhfkit's exported, and other tools' read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import train_tiny_reward_model
from rlhfkit.cli import main
from rlhfkit.data.records import Message
from rlhfkit.models.scoring import RewardTextScorer
from test_rl_train import tiny_args

QUESTIONS = ["What is rain?", "Why do owls hoot?", "Where is the salt?"]
ANSWERS = [
    ["Rain is water.", "No idea"],
    ["To call.", "Owls hoot at night, often."],
    ["Here.", "Salt."],
]


@pytest.fixture(scope="module")
def last_token_reward_model(tmp_path_factory) -> Path:
    """A reward model on the tiny model whose head reads the answer's last token; reward
    centering moves its head's bias away from 0."""
    folder = tmp_path_factory.mktemp("rm_last")
    return train_tiny_reward_model(
        folder, head_pooling="last", center_rewards_coeff=1.0, validation_fraction=0.0
    )


def tiny_llama_config(tokenizer, **settings):
    """A two-layer Llama config on the bundled tokenizer's vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        **settings,
    )


def flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def conversations() -> list[tuple[Message, ...]]:
    return [(Message("user", q),) for q in QUESTIONS]


def test_an_exported_reward_model_gives_rlhfkits_rewards_in_plain_transformers(
    tmp_path, last_token_reward_model, tiny_reward_model, capsys
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "exported"
    assert main(["export-reward", str(last_token_reward_model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AutoModelForSequenceClassification, 2 layers, padding token <|endoftext|>" in printed
    bias = json.loads((out / "config.json").read_text())["rlhfkit_input"]["head_bias"]
    assert bias != 0 and f"bias {bias:+.6f}" in printed
    ours = RewardTextScorer.load(last_token_reward_model, dtype="fp32", device="cpu")
    expected = ours.score(conversations(), ANSWERS)
    # plain transformers, one sequence at a time: the chat template's prompt, the answer and
    # the end-of-turn token; the score of the last token
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.num_labels == 1 and tokenizer.pad_token == "<|endoftext|>"
    for question, answers, rewards in zip(QUESTIONS, ANSWERS, expected, strict=True):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        for answer, reward in zip(answers, rewards, strict=True):
            ids = tokenizer(prompt + answer + tokenizer.eos_token, add_special_tokens=False)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids["input_ids"]])).logits
            assert logits.shape == (1, 1)
            assert logits[0, 0].item() == pytest.approx(reward - bias, abs=1e-4)
    # rlhfkit reads the folder back (reward_model=FOLDER) and scores as before, in batches
    back = RewardTextScorer.load(out, dtype="fp32", device="cpu")
    again = back.score(conversations(), ANSWERS, batch_size=4)
    assert flat(again) == pytest.approx(flat(expected), abs=1e-4)
    # a mean-pooled reward model (the default) has no sequence-classification form: exit 2
    assert json.loads((tiny_reward_model / "rlhfkit_reward.json").read_text())["pooling"] == "mean"
    assert main(["export-reward", str(tiny_reward_model), "--out", str(tmp_path / "no")]) == 2
    assert "head_pooling=mean" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


@pytest.fixture(scope="module")
def foreign_reward_model(tmp_path_factory) -> Path:
    """A reward model another tool saved: a tiny random LlamaForSequenceClassification
    (num_labels=1) with the bundled tokenizer, written by transformers alone."""
    from transformers import LlamaForSequenceClassification

    from rlhfkit.models.loading import load_tokenizer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1))
    folder = tmp_path_factory.mktemp("trl_reward")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_another_tools_reward_model_is_scored_through_its_chat_template(foreign_reward_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(foreign_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(foreign_reward_model).eval()
    expected = []
    for question, answers in zip(QUESTIONS, ANSWERS, strict=True):
        row = []
        for answer in answers:
            conversation = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            text = tokenizer.apply_chat_template(conversation, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
                row.append(model.score(hidden[0, -1]).item())
        expected.append(row)
    scorer = RewardTextScorer.load(foreign_reward_model, dtype="fp32", device="cpu")
    # batched with right padding: each answer's reward does not depend on its batch
    got = scorer.score(conversations(), ANSWERS, batch_size=3)
    assert flat(got) == pytest.approx(flat(expected), abs=1e-5)
    assert len({round(r, 6) for row in expected for r in row}) == 6  # the answers differ


def test_reward_model_folders_of_other_tools_drive_rl_score_and_sxs(
    tmp_path, foreign_reward_model, capsys
):
    assert main(["train-rl", *tiny_args(tmp_path, foreign_reward_model)]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in metrics if "reward" in r][-1] == 4
    prefs = tmp_path / "prefs.jsonl"
    rows = [
        {"input_text": q, "candidate_0": a, "candidate_1": b, "choice": 0}
        for q, (a, b) in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--reward-model", str(foreign_reward_model), "--data", str(prefs)]) == 0
    scored = capsys.readouterr()
    assert "pairwise accuracy" in scored.err
    rewards = [
        json.loads(line)["reward_0"] for line in scored.out.splitlines() if "reward_0" in line
    ]
    assert len(rewards) == 3 and all(r != float(torch.tensor(r).bfloat16()) for r in rewards)
    files = []
    for side in (0, 1):
        path = tmp_path / f"{side}.jsonl"
        lines = [
            json.dumps({"input_text": q, "prediction": pair[side]})
            for q, pair in zip(QUESTIONS, ANSWERS, strict=True)
        ]
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    autorater = f"autorater=reward_model:{foreign_reward_model}"
    sxs = ["sxs", f"a={files[0]}", f"b={files[1]}", autorater, f"out={tmp_path / 'sxs'}"]
    assert main(sxs) == 0
    assert json.loads((tmp_path / "sxs" / "metrics.json").read_text())["n"] == 3
    # a folder that is neither rlhfkit's nor a one-label classifier: one clear line, exit 2
    assert main(["score", "--reward-model", str(tmp_path), "--data", str(prefs)]) == 2
    assert "AutoModelForSequenceClassification (num_labels=1)" in capsys.readouterr().err


def save_openrlhf_reward_model(folder: Path, head: str, normalize: bool) -> Path:
    """A reward model laid out as OpenRLHF's train_rm saves one: a pretrained-model class
    holding the decoder under its base prefix and a bias-free one-output value head, saved
    by save_pretrained, with `normalize_reward`, `mean`, `std` (and, in current versions,
    `value_head_prefix`) in its config; the bundled tokenizer beside it."""
    from transformers import LlamaModel, LlamaPreTrainedModel

    from rlhfkit.models.loading import load_tokenizer

    class RewardModel(LlamaPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.model = LlamaModel(config)
            setattr(self, head, torch.nn.Linear(config.hidden_size, 1, bias=False))
            self.post_init()

    tokenizer = load_tokenizer()
    torch.manual_seed(1)
    config = tiny_llama_config(tokenizer)
    config.normalize_reward = normalize
    if head == "score":
        config.value_head_prefix = head
    if normalize:
        config.mean, config.std = 0.25, 2.0
    model = RewardModel(config)
    torch.nn.init.normal_(getattr(model, head).weight, std=0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def openrlhf_rewards(folder: Path, head: str) -> list[list[float]]:
    """What OpenRLHF's reward model gives, in plain transformers: its reward dataset's text
    (the rendered conversation, newlines cut, the end token appended unless there, the last
    token made the end token), the head on the last token, then (r - mean) / std."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    trunk = AutoModel.from_pretrained(folder).eval()
    weight = load_file(folder / "model.safetensors")[f"{head}.weight"]
    mean, std = (config.mean, config.std) if config.normalize_reward else (0.0, 1.0)
    rows = []
    for question, answers in zip(QUESTIONS, ANSWERS, strict=True):
        row = []
        for answer in answers:
            turns = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            text = tokenizer.apply_chat_template(turns, tokenize=False).rstrip("\n")
            if not text.endswith(tokenizer.eos_token):
                text += " " + tokenizer.eos_token
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids[-1] = tokenizer.eos_token_id
            with torch.no_grad():
                hidden = trunk(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            row.append(((hidden @ weight[0]).item() - mean) / std)
        rows.append(row)
    return rows


@pytest.mark.parametrize(("head", "normalize"), [("score", True), ("value_head", False)])
def test_an_openrlhf_reward_model_is_scored_as_openrlhf_scores_it(tmp_path, head, normalize):
    folder = save_openrlhf_reward_model(tmp_path / "openrlhf_rm", head, normalize)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["RewardModel"] and "normalize_reward" in config
    expected = openrlhf_rewards(folder, head)
    scorer = RewardTextScorer.load(folder, dtype="fp32", device="cpu")
    got = scorer.score(conversations(), ANSWERS, batch_size=4)
    assert flat(got) == pytest.approx(flat(expected), abs=1e-5)
    assert len({round(r, 6) for r in flat(expected)}) == 6  # the answers differ


def test_openrlhf_reward_models_drive_score_and_critics_are_refused(tmp_path, capsys):
    folder = save_openrlhf_reward_model(tmp_path / "openrlhf_rm", "score", True)
    prefs = tmp_path / "prefs.jsonl"
    rows = [
        {"input_text": q, "candidate_0": a, "candidate_1": b, "choice": 0}
        for q, (a, b) in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--reward-model", str(folder), "--data", str(prefs)]) == 0
    scored = capsys.readouterr()
    rewards = [json.loads(line) for line in scored.out.splitlines() if "reward_0" in line]
    expected = openrlhf_rewards(folder, "score")
    # `score` runs the decoder in bf16 on a CPU with fast bf16: equal up to its rounding
    assert [r["reward_0"] for r in rewards] == pytest.approx([e[0] for e in expected], rel=0.03)
    # a critic (OpenRLHF's PPO value model) is no reward model: one clear line, exit 2
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["CriticModel"]
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["score", "--reward-model", str(folder), "--data", str(prefs)]) == 2
    assert "OpenRLHF critic" in capsys.readouterr().err
    # a value head missing from the weights: named, exit 2
    config["architectures"], config["value_head_prefix"] = ["RewardModel"], "reward_head"
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["score", "--reward-model", str(folder), "--data", str(prefs)]) == 2
    assert "reward_head.weight" in capsys.readouterr().err
