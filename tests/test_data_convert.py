"""Converting datasets between the rlhf_pipeline and TRL formats."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest

from data_helpers import problems_of, write_jsonl
from rlhfkit.data.convert import convert_file, to_rows
from rlhfkit.data.formats import dataset_from_rows, load_dataset
from rlhfkit.data.records import Source
from rlhfkit.errors import RlhfkitError

RLHF_TEXT = [
    {"input_text": "2+2?", "candidate_0": "5", "candidate_1": "4", "choice": 1, "margin": 2.0},
    {"input_text": "Hi", "candidate_0": "Hello", "candidate_1": "Go away", "choice": 0, "id": 9},
]
RLHF_CHAT = [
    {
        "context": "Be brief.",
        "messages": [
            {"author": "user", "content": "Hi"},
            {"author": "assistant", "content": "Hello!"},
            {"author": "user", "content": "Joke?"},
        ],
        "candidate_0": "No.",
        "candidate_1": "Knock knock.",
        "choice": 1,
        "topic": "jokes",
    },
    {
        "messages": [{"author": "user", "content": "Sky?"}],
        "candidate_0": "Blue",
        "candidate_1": "Green",
        "choice": 0,
    },
]


def read_jsonl(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def without_source(records: list) -> list:
    return [dataclasses.replace(r, source=Source("", 0)) for r in records]


@pytest.mark.parametrize("rows", [RLHF_TEXT, RLHF_CHAT], ids=["text", "chat"])
def test_rlhf_to_rlhf_gives_back_the_same_rows(tmp_path, rows):
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    assert convert_file(src, tmp_path / "out.jsonl", to="rlhf") == 2
    assert read_jsonl(tmp_path / "out.jsonl") == rows


def test_rlhf_text_to_trl_rows(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", RLHF_TEXT)
    convert_file(src, tmp_path / "out.jsonl", to="trl")
    assert read_jsonl(tmp_path / "out.jsonl") == [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": 2.0},
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away", "id": 9},
    ]


def test_rlhf_chat_to_trl_rows_are_conversational(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", RLHF_CHAT)
    convert_file(src, tmp_path / "out.jsonl", to="trl")
    assert read_jsonl(tmp_path / "out.jsonl") == [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Joke?"},
            ],
            "chosen": [{"role": "assistant", "content": "Knock knock."}],
            "rejected": [{"role": "assistant", "content": "No."}],
            "topic": "jokes",
        },
        {
            "prompt": [{"role": "user", "content": "Sky?"}],
            "chosen": [{"role": "assistant", "content": "Blue"}],
            "rejected": [{"role": "assistant", "content": "Green"}],
        },
    ]


@pytest.mark.parametrize("rows", [RLHF_TEXT, RLHF_CHAT], ids=["text", "chat"])
def test_rlhf_to_trl_to_rlhf_keeps_the_records(tmp_path, rows):
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    assert convert_file(src, tmp_path / "trl.jsonl.gz", to="trl") == 2
    assert load_dataset(tmp_path / "trl.jsonl.gz").format == "trl"
    assert convert_file(tmp_path / "trl.jsonl.gz", tmp_path / "back.jsonl", to="rlhf") == 2
    original = load_dataset(src).records
    back = load_dataset(tmp_path / "back.jsonl").records
    # TRL has no candidate order: everything survives except `choice`, which becomes 0.
    assert [r.choice for r in back] == [0, 0]
    assert without_source(back) == [
        dataclasses.replace(r, choice=0) for r in without_source(original)
    ]


def test_gz_output_is_gzip(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", RLHF_TEXT)
    out = tmp_path / "sub" / "out.jsonl.gz"
    convert_file(src, out, to="rlhf")
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert read_jsonl(out) == RLHF_TEXT


def test_hh_and_implicit_to_trl_and_rlhf():
    hh = dataset_from_rows(
        [
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye?\n\nAssistant: Bye!",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye?\n\nAssistant: No.",
            }
        ],
        "preference",
    )
    assert to_rows(hh, "rlhf") == [
        {
            "messages": [
                {"author": "user", "content": "Hi"},
                {"author": "assistant", "content": "Yo"},
                {"author": "user", "content": "Bye?"},
            ],
            "candidate_0": "Bye!",
            "candidate_1": "No.",
            "choice": 0,
        }
    ]
    implicit = dataset_from_rows([{"chosen": "Q: x? A: yes", "rejected": "Q: x? A: no"}], None)
    assert to_rows(implicit, "trl") == [{"prompt": "Q: x? A: ", "chosen": "yes", "rejected": "no"}]
    assert to_rows(implicit, "rlhf") == [
        {"input_text": "Q: x? A: ", "candidate_0": "yes", "candidate_1": "no", "choice": 0}
    ]


def test_prompt_datasets(tmp_path):
    rows = [
        {
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "2+2?"}],
            "answer": "4",
        },
        {"messages": [{"role": "user", "content": "3+3?"}], "answer": "6"},
    ]
    src = write_jsonl(tmp_path / "rft.jsonl", rows)
    assert convert_file(src, tmp_path / "rlhf.jsonl", to="rlhf", kind="prompt") == 2
    assert read_jsonl(tmp_path / "rlhf.jsonl") == [
        {"context": "S", "messages": [{"author": "user", "content": "2+2?"}], "answer": "4"},
        {"messages": [{"author": "user", "content": "3+3?"}], "answer": "6"},
    ]
    convert_file(src, tmp_path / "trl.jsonl", to="trl")
    assert read_jsonl(tmp_path / "trl.jsonl") == [
        {
            "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "2+2?"}],
            "answer": "4",
        },
        {"prompt": [{"role": "user", "content": "3+3?"}], "answer": "6"},
    ]
    text = dataset_from_rows([{"input_text": "Hi", "id": 1}], "prompt")
    assert to_rows(text, "trl") == [{"prompt": "Hi", "id": 1}]
    assert to_rows(text, "rlhf") == [{"input_text": "Hi", "id": 1}]
    back = dataset_from_rows(to_rows(dataset_from_rows(rows, "prompt"), "rlhf"), "prompt")
    assert without_source(back.records) == without_source(dataset_from_rows(rows, "prompt").records)
    convert_file(src, tmp_path / "openai.jsonl", to="openai")
    assert read_jsonl(tmp_path / "openai.jsonl") == rows
    assert to_rows(text, "openai") == [{"messages": [{"role": "user", "content": "Hi"}], "id": 1}]


OPENAI_DPO = [
    {
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Joke?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "Knock knock."}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
        "metadata": {"topic": "jokes"},
    },
    {
        "input": {"messages": [{"role": "user", "content": "Sky?"}]},
        "preferred_output": [{"role": "assistant", "content": "Blue"}],
        "non_preferred_output": [{"role": "assistant", "content": "Green"}],
        "margin": 0.5,
    },
]


def test_openai_to_openai_gives_back_the_same_rows_and_drops_tools(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", OPENAI_DPO)
    assert convert_file(src, tmp_path / "out.jsonl", to="openai") == 2
    assert read_jsonl(tmp_path / "out.jsonl") == OPENAI_DPO
    with_tools = [
        {**row, "input": {**row["input"], "tools": [], "parallel_tool_calls": True}}
        for row in OPENAI_DPO
    ]
    assert to_rows(dataset_from_rows(with_tools, None), "openai") == OPENAI_DPO


def test_rlhf_to_openai_to_rlhf_keeps_the_records(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", RLHF_CHAT)
    assert convert_file(src, tmp_path / "openai.jsonl", to="openai") == 2
    first = {key: value for key, value in OPENAI_DPO[0].items() if key != "metadata"}
    assert read_jsonl(tmp_path / "openai.jsonl")[0] == {**first, "topic": "jokes"}
    assert load_dataset(tmp_path / "openai.jsonl").format == "openai_dpo"
    assert convert_file(tmp_path / "openai.jsonl", tmp_path / "back.jsonl", to="rlhf") == 2
    back = load_dataset(tmp_path / "back.jsonl").records
    original = load_dataset(src).records
    # OpenAI rows have no candidate order either: `choice` becomes 0
    assert without_source(back) == [
        dataclasses.replace(r, choice=0) for r in without_source(original)
    ]


def test_plain_prompts_become_openai_conversations():
    dataset = dataset_from_rows(RLHF_TEXT, "preference")
    assert to_rows(dataset, "openai")[0] == {
        "input": {"messages": [{"role": "user", "content": "2+2?"}]},
        "preferred_output": [{"role": "assistant", "content": "4"}],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
        "margin": 2.0,
    }


def test_conversation_that_rlhf_cannot_express_is_reported():
    row = {
        "prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        "chosen": [{"role": "assistant", "content": "c"}],
        "rejected": [{"role": "assistant", "content": "d"}],
    }
    dataset = dataset_from_rows([row], "preference", name="in.jsonl")
    error = problems_of(to_rows, dataset, "rlhf")
    assert error.summary == (
        "1 row(s) of in.jsonl cannot be written in the rlhf format; fix or remove these rows, "
        "or convert to another format"
    )
    assert error.problems == [
        "in.jsonl:1: message 1 of the prompt is a user message, but rlhf chat messages (after "
        "one optional system context) alternate user, assistant, user, ... starting with user"
    ]
    assert to_rows(dataset, "trl")[0]["prompt"] == row["prompt"]


def test_extra_field_with_a_target_key_name_is_reported():
    dataset = dataset_from_rows(
        [{"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": 0, "prompt": "x"}],
        "preference",
    )
    assert problems_of(to_rows, dataset, "trl").problems == [
        "<rows>:1: its extra field 'prompt' has the name of a field of the target format; "
        "rename or drop it"
    ]


def test_unknown_target_lists_the_choices(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", RLHF_TEXT)
    with pytest.raises(RlhfkitError) as info:
        convert_file(src, tmp_path / "out.jsonl", to="dpo")
    assert str(info.value) == "unknown output format 'dpo'; choose one of: rlhf, trl, openai"
    with pytest.raises(RlhfkitError, match="unknown output format 'x'"):
        to_rows(load_dataset(src), "x")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("name", ["out.json", "out.csv", "out.jsonl.bz2"])
def test_unsupported_output_suffix_is_refused(tmp_path, name):
    src = write_jsonl(tmp_path / "in.jsonl", RLHF_TEXT)
    with pytest.raises(RlhfkitError) as info:
        convert_file(src, tmp_path / name, to="trl")
    assert str(info.value) == (
        f"cannot write {tmp_path / name}: the output must end in .jsonl or .jsonl.gz "
        "(gzip-compressed)"
    )
    assert not (tmp_path / name).exists()


def test_invalid_input_writes_nothing(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "chosen": "a"}])
    out = tmp_path / "out.jsonl"
    error = problems_of(convert_file, src, out, to="rlhf")
    assert error.problems == [f"{src}:1: missing key 'rejected'"]
    assert not out.exists()
