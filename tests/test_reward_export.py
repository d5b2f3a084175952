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
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rlhfkit.models.loading import load_tokenizer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
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
