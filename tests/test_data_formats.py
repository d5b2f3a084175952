"""Format detection, validation and normalisation of preference and prompt datasets."""

from __future__ import annotations

import json

import pytest

from data_helpers import problems_of, write_jsonl, write_text
from rlhfkit.data.formats import (
    FORMAT_KEYS,
    dataset_from_rows,
    detect_format,
    load_dataset,
    load_preferences,
    load_prompts,
)
from rlhfkit.data.records import (
    PREFERENCE_FORMATS,
    PROMPT_FORMATS,
    Message,
    PreferenceRecord,
    PromptRecord,
    Source,
)
from rlhfkit.errors import RlhfkitError

FIX = (
    "fix or remove these rows, or set bad_rows=skip (--bad-rows skip in data convert and "
    "score) to leave them out, counted and listed"
)


def user(text: str) -> Message:
    return Message("user", text)


def assistant(text: str) -> Message:
    return Message("assistant", text)


def only_record(rows: list, kind: str | None = "preference"):
    dataset = dataset_from_rows(rows, kind)
    assert len(dataset.records) == 1
    return dataset.records[0]


def problems(rows: list, kind: str | None = "preference") -> list[str]:
    return problems_of(dataset_from_rows, rows, kind).problems


def test_format_table_covers_every_format():
    assert tuple(FORMAT_KEYS["preference"]) == PREFERENCE_FORMATS
    assert tuple(FORMAT_KEYS["prompt"]) == PROMPT_FORMATS


# ---------------------------------------------------------------- preference formats


def test_rlhf_text_preference(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"input_text": "2+2?", "candidate_0": "5", "candidate_1": "4", "choice": 1, "id": 7},
            {"input_text": "Hi", "candidate_0": "Hello", "candidate_1": "Go away", "choice": 0},
        ],
    )
    dataset = load_preferences(path)
    assert (dataset.kind, dataset.format, dataset.files) == ("preference", "rlhf_text", [str(path)])
    assert dataset.records == [
        PreferenceRecord(
            (user("2+2?"),), "4", "5", Source(str(path), 1), choice=1, extra={"id": 7}
        ),
        PreferenceRecord((user("Hi"),), "Hello", "Go away", Source(str(path), 2), choice=0),
    ]
    assert dataset.records[0].candidates == ("5", "4")
    assert dataset.warnings == []


def test_rlhf_chat_preference_with_context_and_margin():
    record = only_record(
        [
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
                "margin": 2,
                "topic": "jokes",
            }
        ]
    )
    assert record == PreferenceRecord(
        messages=(Message("system", "Be brief."), user("Hi"), assistant("Hello!"), user("Joke?")),
        chosen="Knock knock.",
        rejected="No.",
        source=Source("<rows>", 1),
        choice=1,
        margin=2.0,
        extra={"topic": "jokes"},
        chat=True,
    )


def test_rlhf_chat_empty_context_adds_no_system_message():
    record = only_record(
        [
            {
                "context": "",
                "messages": [{"author": "user", "content": "Hi"}],
                "candidate_0": "a",
                "candidate_1": "b",
                "choice": 0,
            }
        ]
    )
    assert record.messages == (user("Hi"),)
    assert record.extra == {}


def test_trl_string_preference():
    record = only_record([{"prompt": "Sky?", "chosen": "Blue", "rejected": "Green", "margin": 0.5}])
    assert record == PreferenceRecord(
        (user("Sky?"),), "Blue", "Green", Source("<rows>", 1), margin=0.5, chat=False
    )


def test_trl_conversational_preference():
    row = {
        "prompt": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
        ],
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "What?"}],
        "lang": "en",
    }
    record = only_record([row])
    assert record == PreferenceRecord(
        (Message("system", "Be kind."), user("Hi")),
        "Hello",
        "What?",
        Source("<rows>", 1),
        extra={"lang": "en"},
        chat=True,
    )


def test_trl_implicit_strings_split_at_a_word_boundary():
    dataset = dataset_from_rows(
        [
            {"chosen": "Q: is it yes? A: yes indeed", "rejected": "Q: is it yes? A: yellow"},
            {"chosen": "Say it:\nhello", "rejected": "Say it:\nbye"},
        ],
        "preference",
    )
    assert dataset.format == "trl_implicit"
    first, second = dataset.records
    assert (first.messages, first.chosen, first.rejected) == (
        (user("Q: is it yes? A: "),),
        "yes indeed",
        "yellow",
    )
    assert (second.messages, second.chosen, second.rejected) == (
        (user("Say it:\n"),),
        "hello",
        "bye",
    )
    assert not first.chat


def test_trl_implicit_when_one_response_extends_the_other():
    record = only_record([{"chosen": "Answer: yes", "rejected": "Answer: yes, definitely"}])
    assert (record.text, record.chosen, record.rejected) == ("Answer: ", "yes", "yes, definitely")


def test_trl_implicit_conversations():
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Weather?"},
    ]
    record = only_record(
        [
            {
                "chosen": [*shared, {"role": "assistant", "content": "Sunny"}],
                "rejected": [*shared, {"role": "assistant", "content": "No idea"}],
            }
        ]
    )
    assert record.messages == (user("Hi"), assistant("Hello"), user("Weather?"))
    assert (record.chosen, record.rejected, record.chat) == ("Sunny", "No idea", True)


HH_PROMPT = "\n\nHuman: What is 2+2?\n\nAssistant: It is 4.\n\nHuman: And 3+3?"
HH_CHOSEN = HH_PROMPT + "\n\nAssistant: 6, because\n\n3+3=6."
HH_REJECTED = HH_PROMPT + "\n\nAssistant: 7"


def test_hh_transcripts_are_parsed_into_turns():
    dataset = dataset_from_rows([{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}], None)
    assert (dataset.kind, dataset.format) == ("preference", "hh")
    record = dataset.records[0]
    assert record.messages == (user("What is 2+2?"), assistant("It is 4."), user("And 3+3?"))
    assert (record.chosen, record.rejected, record.chat) == ("6, because\n\n3+3=6.", "7", True)


def test_hh_without_the_leading_blank_line():
    record = only_record(
        [{"chosen": "Human: Hi\n\nAssistant: Yo", "rejected": "Human: Hi\n\nAssistant: No"}]
    )
    assert record.messages == (user("Hi"),)
    assert (record.chosen, record.rejected) == ("Yo", "No")


def test_hh_errors():
    rows = [
        {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN.replace("It is 4", "It is 5")},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye", "rejected": HH_REJECTED},
        {"chosen": "\n\nHuman:  \n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: No"},
        {
            "chosen": "Intro\n\nHuman: Hi\n\nAssistant: A",
            "rejected": "\n\nHuman: Hi\n\nAssistant: B",
        },
    ]
    assert problems(rows) == [
        "<rows>:1: chosen and rejected must share every turn before the final Assistant turn; "
        "they differ at turn 2",
        "<rows>:2: chosen must end with an '\\n\\nAssistant:' turn (the response), found Human",
        "<rows>:3: chosen turn 1 (Human) is empty",
        "<rows>:3: chosen turn 2 (Assistant) is empty",
        "<rows>:4: chosen has text before its first '\\n\\nHuman:' turn",
    ]


def openai_row(prompt: list, preferred: list, non_preferred: list, **rest) -> dict:
    return {
        "input": {"messages": prompt, "tools": [], "parallel_tool_calls": True},
        "preferred_output": preferred,
        "non_preferred_output": non_preferred,
        **rest,
    }


OPENAI_PROMPT = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "?"}],
    },
]


def test_openai_dpo_preference(tmp_path):
    row = openai_row(
        OPENAI_PROMPT,
        [{"role": "assistant", "content": [{"type": "text", "text": "Sunny"}], "weight": 1}],
        [{"role": "assistant", "content": "No idea"}],
        metadata={"id": 3},
        margin=1,
    )
    path = write_jsonl(tmp_path / "dpo.jsonl", [row])
    dataset = load_dataset(path)
    assert (dataset.kind, dataset.format) == ("preference", "openai_dpo")
    # input.tools, input.parallel_tool_calls and a message's other keys are ignored
    assert dataset.records == [
        PreferenceRecord(
            (Message("system", "Be kind."), user("Hi"), assistant("Hello"), user("Weather ?")),
            "Sunny",
            "No idea",
            Source(str(path), 1),
            margin=1.0,
            extra={"metadata": {"id": 3}},
            chat=True,
        )
    ]


def test_openai_dpo_errors(tmp_path):
    prompt = [{"role": "user", "content": "Hi"}]
    good = [{"role": "assistant", "content": "Yo"}]
    rows = [
        openai_row(prompt, [{"role": "assistant"}], good),
        openai_row(prompt, good, [{"role": "user", "content": "x"}]),
        openai_row(prompt, [*good, *good], good),
        openai_row(prompt + good, good, "Yo"),
        {"input": prompt, "preferred_output": good, "non_preferred_output": good},
        {"input": {"tools": []}, "preferred_output": good},
        openai_row(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}, "Hi", {}]}],
            [{"role": "assistant", "content": {"text": "Yo"}}],
            [{"role": "assistant", "content": [{"type": "text", "text": " "}]}],
        ),
    ]
    path = write_jsonl(tmp_path / "dpo.jsonl", rows)
    one = (
        'must be a list of exactly one assistant message [{"role": "assistant", "content": ...}] '
        "like the conversational prompt, found"
    )
    assert problems_of(load_dataset, path).problems == [
        f"{path}:1: preferred_output[0] is missing key 'content'",
        f"{path}:2: non_preferred_output[0].role must be 'assistant' (the last message of a "
        "response), found 'user'",
        f"{path}:3: preferred_output {one} 2 messages",
        f"{path}:4: input.messages[1].role must be 'user' (the last message of a prompt), "
        "found 'assistant'",
        f"{path}:4: non_preferred_output {one} string",
        f"{path}:5: input must be an object {{messages, ...}}, found array",
        f"{path}:6: input is missing key 'messages'",
        f"{path}:6: missing key 'non_preferred_output'",
        f"{path}:7: input.messages[0].content[0].type must be 'text' or 'input_text' or "
        "'output_text' (only text is read), found \"image_url\" (string)",
        f"{path}:7: input.messages[0].content[1] must be an object {{type: text, text}}, "
        "found string",
        f"{path}:7: input.messages[0].content[2] is missing key 'type'",
        f"{path}:7: preferred_output[0].content must be a string or a list of "
        "{type: text, text} parts, found object",
        f"{path}:7: non_preferred_output[0].content is empty (or whitespace only)",
    ]
    rows.append(openai_row(prompt, good, [{"role": "assistant", "content": "No"}]))
    dataset = load_dataset(write_jsonl(tmp_path / "some_bad.jsonl", rows), bad_rows="skip")
    assert [(r.chosen, r.rejected, str(r.source)) for r in dataset.records] == [
        ("Yo", "No", f"{tmp_path / 'some_bad.jsonl'}:8")
    ]
    assert dataset.dropped_rows == 7


def test_margin_and_extra_keys():
    record = only_record(
        [{"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": 0, "margin": 1.5}]
    )
    assert (record.margin, record.extra) == (1.5, {})
    assert problems(
        [
            {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"},
            {"prompt": "q", "chosen": "a", "rejected": "b", "margin": True},
            {"prompt": "q", "chosen": "a", "rejected": "b", "margin": float("nan")},
        ]
    ) == [
        '<rows>:1: margin must be a finite number, found "big" (string)',
        "<rows>:2: margin must be a finite number, found true (boolean)",
        "<rows>:3: margin must be a finite number, found NaN (number)",
    ]


def test_identical_chosen_and_rejected_is_a_warning(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "q", "chosen": "a", "rejected": "b"},
            {"prompt": "q", "chosen": "same", "rejected": "same"},
        ],
    )
    dataset = load_preferences(path)
    assert len(dataset) == 2
    assert dataset.warnings == [
        f"{path}:2: chosen and rejected are identical, so the row teaches no preference; "
        "remove it or fix one of them"
    ]


# ---------------------------------------------------------------- prompt formats


def test_prompt_formats(tmp_path):
    cases = {
        "rlhf_text": ({"input_text": "Hi", "id": 1}, (user("Hi"),), False, {"id": 1}),
        "rlhf_chat": (
            {"context": "Sys", "messages": [{"author": "user", "content": "Hi"}], "id": 2},
            (Message("system", "Sys"), user("Hi")),
            True,
            {"id": 2},
        ),
        "trl": ({"prompt": "Hi", "answer": "4"}, (user("Hi"),), False, {"answer": "4"}),
        "openai_rft": (
            {
                "messages": [
                    {"role": "system", "content": "Sys"},
                    {"role": "user", "content": "2+2?"},
                ],
                "reference_answer": "4",
                "tags": ["math"],
            },
            (Message("system", "Sys"), user("2+2?")),
            True,
            {"reference_answer": "4", "tags": ["math"]},
        ),
    }
    for fmt, (row, messages, chat, extra) in cases.items():
        path = write_jsonl(tmp_path / f"{fmt}.jsonl", [row])
        dataset = load_prompts(path)
        assert (dataset.kind, dataset.format) == ("prompt", fmt)
        assert dataset.records == [PromptRecord(messages, Source(str(path), 1), extra, chat)]


def test_trl_conversational_prompt():
    record = only_record(
        [
            {
                "prompt": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Yo"},
                    {"role": "user", "content": "Bye"},
                ]
            }
        ],
        "prompt",
    )
    assert record == PromptRecord(
        (user("Hi"), assistant("Yo"), user("Bye")), Source("<rows>", 1), chat=True
    )


def test_prompt_errors():
    rows = [
        {"input_text": "   "},
        {"prompt": 3},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": "S"},
                {"role": "user", "content": "Hi"},
            ]
        },
        {"messages": [{"role": "bot", "content": "Hi"}, {"content": "Hi"}]},
    ]
    assert problems(rows, "prompt") == [
        "<rows>:1: input_text is empty (or whitespace only)",
        "<rows>:2 is format trl but the dataset's first row (<rows>:1) is format rlhf_text; "
        "one dataset must use one format",
        "<rows>:3 is format openai_rft but the dataset's first row (<rows>:1) is format "
        "rlhf_text; one dataset must use one format",
        "<rows>:4 is format openai_rft but the dataset's first row (<rows>:1) is format "
        "rlhf_text; one dataset must use one format",
        "<rows>:5 is format openai_rft but the dataset's first row (<rows>:1) is format "
        "rlhf_text; one dataset must use one format",
    ]
    assert problems(rows[2:], "prompt") == [
        "<rows>:1: messages[1].role must be 'user' (the last message of a prompt), "
        "found 'assistant'",
        "<rows>:2: messages[1].role is 'system' but system messages may only come first",
        "<rows>:3: messages[0].role must be 'system', 'user' or 'assistant', "
        'found "bot" (string)',
        "<rows>:3: messages[1] is missing key 'role'",
    ]
    assert problems([rows[1]], "prompt") == [
        "<rows>:1: prompt must be a string or a list of {role, content} messages, found number"
    ]


def test_openai_rft_content_may_be_text_parts():
    parts = [{"type": "text", "text": "2+2"}, {"type": "text", "text": "?"}]
    record = only_record([{"messages": [{"role": "user", "content": parts}]}], "prompt")
    assert record.messages == (user("2+2?"),)
    assert problems(
        [{"messages": [{"role": "user", "content": [{"type": "text"}]}]}], "prompt"
    ) == ["<rows>:1: messages[0].content[0] is missing key 'text'"]


# ---------------------------------------------------------------- validation


def test_missing_keys_and_wrong_types():
    rows = [
        {"input_text": "q", "candidate_0": "a", "choice": 0},
        {"input_text": ["q"], "candidate_0": 1, "candidate_1": None, "choice": 0},
        {"input_text": "q", "candidate_0": "a", "candidate_1": "b"},
    ]
    assert problems(rows) == [
        "<rows>:1: missing key 'candidate_1'",
        "<rows>:2: input_text must be a string, found array",
        "<rows>:2: candidate_0 must be a string, found number",
        "<rows>:2: candidate_1 must be a string, found null",
        "<rows>:3: missing key 'choice'",
    ]


@pytest.mark.parametrize(
    ("choice", "shown"),
    [
        (True, "true (boolean)"),
        (0.5, "0.5 (number)"),
        (1.0, "1.0 (number)"),
        ("1", '"1" (string)'),
        (2, "2 (number)"),
        (None, "null (null)"),
    ],
)
def test_choice_must_be_the_integer_0_or_1(choice, shown):
    row = {"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": choice}
    assert problems([row]) == [
        f"<rows>:1: choice must be 0 or 1 (the index of the preferred candidate), found {shown}"
    ]


def test_empty_text_anywhere_is_an_error():
    rows = [
        {"input_text": "q", "candidate_0": "", "candidate_1": " \n", "choice": 0},
        {
            "messages": [{"author": "user", "content": "\t"}],
            "candidate_0": "a",
            "candidate_1": "b",
            "choice": 1,
        },
    ]
    assert problems(rows, None) == [
        "<rows>:1: candidate_0 is empty (or whitespace only)",
        "<rows>:1: candidate_1 is empty (or whitespace only)",
        "<rows>:2 is format rlhf_chat but the dataset's first row (<rows>:1) is format "
        "rlhf_text; one dataset must use one format",
    ]
    assert problems([{"prompt": "", "chosen": "a", "rejected": " "}]) == [
        "<rows>:1: prompt is empty (or whitespace only)",
        "<rows>:1: rejected is empty (or whitespace only)",
    ]
    assert problems([rows[1]]) == ["<rows>:1: messages[0].content is empty (or whitespace only)"]


def test_rlhf_chat_author_values_and_order():
    def row(*authors: str) -> dict:
        messages = [{"author": a, "content": "text"} for a in authors]
        return {"messages": messages, "candidate_0": "a", "candidate_1": "b", "choice": 0}

    rows = [
        row("user", "assistant", "assistant"),
        row("assistant"),
        row("user", "system", "user"),
        row("user", "assistant"),
        {"messages": [], "candidate_0": "a", "candidate_1": "b", "choice": 0},
        {"messages": "Hi", "candidate_0": "a", "candidate_1": "b", "choice": 0},
        {
            "messages": [{"author": "user"}, "Hi"],
            "candidate_0": "a",
            "candidate_1": "b",
            "choice": 0,
        },
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "candidate_0": "a",
            "candidate_1": "b",
            "choice": 0,
        },
        {
            "context": 5,
            "messages": [{"author": "user", "content": "Hi"}],
            "candidate_0": "a",
            "candidate_1": "b",
            "choice": 0,
        },
    ]
    alternate = "(messages alternate user, assistant, user, ... starting with user)"
    assert problems(rows) == [
        f"<rows>:1: messages[2].author must be 'user' {alternate}, found 'assistant'",
        f"<rows>:2: messages[0].author must be 'user' {alternate}, found 'assistant'",
        "<rows>:3: messages[1].author must be 'user' or 'assistant', found \"system\" (string)",
        "<rows>:4: messages[1].author must be 'user' (the last message is the turn to answer), "
        "found 'assistant'",
        "<rows>:5: messages is empty; it needs at least one message",
        "<rows>:6: messages must be a list of {author, content} objects, found string",
        "<rows>:7: messages[0] is missing key 'content'",
        "<rows>:7: messages[1] must be an object {author, content}, found string",
        "<rows>:8: messages[0] is missing key 'author'",
        "<rows>:9: context must be a string, found number",
    ]


def test_trl_errors():
    conversation = [{"role": "user", "content": "Hi"}]
    reply = [{"role": "assistant", "content": "Yo"}]
    rows = [
        {"prompt": "q", "chosen": "a"},
        {"prompt": conversation, "chosen": "Yo", "rejected": reply},
        {
            "prompt": conversation,
            "chosen": [*reply, *reply],
            "rejected": [{"role": "user", "content": "x"}],
        },
        {"prompt": conversation + reply, "chosen": reply, "rejected": reply},
        {"prompt": {"text": "q"}, "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": ["a"], "rejected": "b"},
    ]
    one = (
        'must be a list of exactly one assistant message [{"role": "assistant", "content": ...}] '
        "like the conversational prompt, found"
    )
    assert problems(rows) == [
        "<rows>:1: missing key 'rejected'",
        f"<rows>:2: chosen {one} string",
        f"<rows>:3: chosen {one} 2 messages",
        "<rows>:3: rejected[0].role must be 'assistant' (the last message of a response), "
        "found 'user'",
        "<rows>:4: prompt[1].role must be 'user' (the last message of a prompt), found 'assistant'",
        "<rows>:5: prompt must be a string or a list of {role, content} messages, found object",
        "<rows>:6: chosen must be a string, found array",
    ]


def test_trl_implicit_errors():
    user_turn = {"role": "user", "content": "Hi"}
    rows = [
        {"chosen": "same text", "rejected": "same text"},
        {"chosen": "Yes", "rejected": "No"},
        {"chosen": "Sure thing", "rejected": "Surely"},
        {"chosen": "Q: a", "rejected": "Q: "},
        {"chosen": "text", "rejected": [user_turn]},
        {"chosen": 3, "rejected": "text"},
        {
            "chosen": [user_turn, {"role": "assistant", "content": "A"}],
            "rejected": [
                {"role": "user", "content": "Other"},
                {"role": "assistant", "content": "B"},
            ],
        },
        {
            "chosen": [{"role": "assistant", "content": "A"}],
            "rejected": [{"role": "assistant", "content": "B"}],
        },
        {"chosen": [user_turn], "rejected": [user_turn]},
    ]
    assert problems(rows) == [
        "<rows>:1: chosen and rejected are identical, so no prompt and responses can be told apart",
        "<rows>:2: chosen and rejected share no prompt text at their start (an implicit-prompt "
        "row is prompt + response in both fields)",
        "<rows>:3: chosen and rejected share no prompt text at their start (an implicit-prompt "
        "row is prompt + response in both fields)",
        "<rows>:4: rejected has no response after the shared prompt",
        "<rows>:5: chosen and rejected must both be strings or both be conversations, found "
        "string and array",
        "<rows>:6: chosen must be a string or a list of {role, content} messages, found number",
        "<rows>:7: chosen and rejected must share every message before their final assistant "
        "message; they differ at message 0",
        "<rows>:8: chosen must hold the prompt before its final assistant message, ending with "
        "a user message",
        "<rows>:9: chosen[0].role must be 'assistant' (the last message of a response), "
        "found 'user'",
        "<rows>:9: rejected[0].role must be 'assistant' (the last message of a response), "
        "found 'user'",
    ]


def test_unknown_format_lists_the_keys_and_the_accepted_formats():
    accepted = "; ".join(
        f"accepted {kind} formats: " + ", ".join(f"{f} ({k})" for f, k in FORMAT_KEYS[kind].items())
        for kind in ("preference", "prompt")
    )
    assert problems([{"question": "q", "answer": "a"}], None) == [
        f"<rows>:1: unknown dataset format: found keys ['answer', 'question']; {accepted}"
    ]
    preference_only = accepted.split("; accepted prompt")[0]
    assert problems([{"prompt": "q"}]) == [
        f"<rows>:1: unknown preference format: found keys ['prompt']; {preference_only} "
        "(the row looks like a prompt row in format trl)"
    ]


def test_mixed_formats_name_both_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "q", "chosen": "a", "rejected": "b"},
            {"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": 0},
            {"prompt": "q", "chosen": "a", "rejected": "c"},
            {"prompt": "just a prompt"},
        ],
    )
    error = problems_of(load_dataset, path)
    assert error.summary == f"dataset {path}: 2 bad row(s), 2 problem(s); {FIX}"
    assert error.problems == [
        f"{path}:2 is format rlhf_text but the dataset's first row ({path}:1) is format trl; "
        "one dataset must use one format",
        f"{path}:4 is format trl (prompt) but the dataset's first row ({path}:1) is format "
        "trl (preference); one dataset must use one format",
    ]


def test_mixed_formats_across_files_of_a_folder(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    write_jsonl(tmp_path / "b.jsonl", [{"chosen": "Q: x", "rejected": "Q: y"}])
    assert problems_of(load_preferences, tmp_path).problems == [
        f"{tmp_path / 'b.jsonl'}:1 is format trl_implicit but the dataset's first row "
        f"({tmp_path / 'a.jsonl'}:1) is format hh; one dataset must use one format"
    ]


def test_read_and_validation_problems_are_reported_together_in_line_order(tmp_path):
    path = write_text(
        tmp_path / "p.jsonl",
        '{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
        '{"prompt": "q", "chosen": "a"}\n'
        "{oops}\n"
        '{"prompt": "q", "chosen": "", "rejected": "b"}\n',
    )
    error = problems_of(load_preferences, path)
    assert error.summary == f"dataset {path}: 3 bad row(s), 3 problem(s); {FIX}"
    assert error.problems == [
        f"{path}:2: missing key 'rejected'",
        f"{path}:3: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        f"{path}:4: chosen is empty (or whitespace only)",
    ]


def test_more_than_twenty_bad_rows_are_capped_in_the_message(tmp_path):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    rows += [{"prompt": "q", "chosen": "a", "rejected": ""} for _ in range(24)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    error = problems_of(load_preferences, path)
    assert len(error.problems) == 24
    lines = str(error).splitlines()
    assert lines[0] == f"dataset {path}: 24 bad row(s), 24 problem(s); {FIX}"
    assert lines[1] == f"  - {path}:2: rejected is empty (or whitespace only)"
    assert lines[20] == f"  - {path}:21: rejected is empty (or whitespace only)"
    assert lines[21:] == ["  ... and 4 more problem(s)"]


def test_empty_dataset_is_an_error(tmp_path):
    path = write_text(tmp_path / "empty.jsonl", "\n\n")
    error = problems_of(load_dataset, path)
    assert str(error) == (
        f"dataset {path} has no rows; add at least one JSON object (one per line in .jsonl files)"
    )
    assert problems_of(dataset_from_rows, [], "prompt").summary.startswith(
        "dataset <rows> has no rows"
    )


def test_rows_that_are_not_objects_are_errors():
    assert problems([["q", "a"]]) == [
        '<rows>:1: the row is a JSON array; every row must be an object ({"key": value, ...})'
    ]


# ---------------------------------------------------------------- detection and kinds


def test_detect_format():
    hh = {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}
    assert detect_format(hh, "preference") == "hh"
    assert detect_format({"chosen": "a b", "rejected": "a c"}, "preference") == "trl_implicit"
    assert detect_format({"prompt": "a", "chosen": "b", "rejected": "c"}, "preference") == "trl"
    assert detect_format({"input_text": "a", "choice": 0}, "preference") == "rlhf_text"
    assert detect_format({"messages": [], "candidate_0": "a"}, "preference") == "rlhf_chat"
    assert detect_format({"prompt": "a"}, "preference") is None
    assert detect_format({"input": {}, "preferred_output": []}, "preference") == "openai_dpo"
    assert detect_format({"non_preferred_output": [], "chosen": "a"}, "preference") == "openai_dpo"
    assert detect_format(openai_row([], [], []), "prompt") is None
    assert detect_format({"input_text": "a"}, "prompt") == "rlhf_text"
    assert detect_format({"messages": [{"author": "user"}]}, "prompt") == "rlhf_chat"
    assert detect_format({"messages": [], "context": ""}, "prompt") == "rlhf_chat"
    assert detect_format({"messages": [{"role": "user"}]}, "prompt") == "openai_rft"
    assert detect_format({"prompt": []}, "prompt") == "trl"
    assert detect_format({"question": "a"}, "prompt") is None
    with pytest.raises(RlhfkitError, match="unknown dataset kind 'pairs'; choose one of"):
        detect_format({}, "pairs")


def test_auto_kind_prefers_preference_keys(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert (load_dataset(path).kind, load_dataset(path).format) == ("preference", "trl")
    assert load_dataset(path, "prompt").records[0].extra == {"chosen": "a", "rejected": "b"}
    prompts = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "q"}])
    assert (load_dataset(prompts).kind, load_dataset(prompts).format) == ("prompt", "trl")


def test_unknown_kind_is_a_user_error(tmp_path):
    with pytest.raises(RlhfkitError) as info:
        load_dataset(tmp_path, "pairs")
    assert str(info.value) == (
        "unknown dataset kind 'pairs'; choose one of: preference, prompt (or leave it out to "
        "detect it)"
    )


def test_json_list_sources_reach_the_records(tmp_path):
    rows = [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "a", "rejected": "b"},
    ]
    path = write_text(tmp_path / "d.json", json.dumps(rows, indent=2))
    assert [str(r.source) for r in load_preferences(path).records] == [f"{path}:2", f"{path}:7"]


# ---------------------------------------------------------------- bad_rows=skip


def bad_rows_file(tmp_path):
    return write_text(
        tmp_path / "p.jsonl",
        '{"input_text": "q1", "candidate_0": "a", "candidate_1": "b", "choice": 0}\n'
        '{"input_text": "q2", "candidate_0": " ", "candidate_1": "b", "choice": 1}\n'
        '{"input_text": "q3", "candidate_0": "a", "candidate_1": "b", "choice": 0}\n'
        '{"input_text": "q4", "candidate_0": "", "candidate_1": "b", "choice": 5}\n'
        "{oops}\n"
        '{"input_text": "q6", "candidate_0": "", "candidate_1": "b", "choice": 1}\n',
    )


def test_skip_leaves_out_bad_rows_and_counts_them_by_reason(tmp_path):
    path = bad_rows_file(tmp_path)
    dataset = load_preferences(path, bad_rows="skip")
    assert [r.text for r in dataset.records] == ["q1", "q3"]
    assert [row["input_text"] for row in dataset.rows] == ["q1", "q3"]
    assert dataset.dropped_rows == 4
    assert [str(source) for source, _ in dataset.dropped] == [
        f"{path}:2",
        f"{path}:4",
        f"{path}:4",
        f"{path}:5",
        f"{path}:6",
    ]
    # a row with two problems counts under both reasons; values found are not part of one
    assert dataset.dropped_reasons() == {
        "candidate_0 is empty (or whitespace only)": 3,
        "choice must be 0 or 1 (the index of the preferred candidate)": 1,
        "invalid JSON: Expecting property name enclosed in double quotes at column 2": 1,
    }
    note = dataset.dropped_note("prefs", "runs/x/dropped_rows.jsonl")
    assert note == (
        "prefs: left out 4 bad row(s) of 6 (bad_rows=skip): 3 x candidate_0 is empty (or "
        "whitespace only); 1 x choice must be 0 or 1 (the index of the preferred candidate); "
        "1 x invalid JSON: Expecting property name enclosed in double quotes at column 2 "
        f"(at {path}:2, {path}:4, {path}:5 and 1 more); all listed in runs/x/dropped_rows.jsonl"
    )
    # the default still stops, and says how to go on
    error = problems_of(load_preferences, path)
    assert error.summary == f"dataset {path}: 4 bad row(s), 5 problem(s); {FIX}"


def test_record_dropped_lists_every_problem_atomically_and_nothing_when_clean(tmp_path):
    from rlhfkit.data.formats import record_dropped

    path = bad_rows_file(tmp_path)
    dataset = load_preferences(path, bad_rows="skip")
    out = tmp_path / "run" / "dropped_rows.jsonl"
    lines = record_dropped({"prefs.jsonl": dataset}, out)
    assert lines == [dataset.dropped_note("prefs.jsonl", out)]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["dataset"], r["line"]) for r in rows] == [
        ("prefs.jsonl", n) for n in (2, 4, 4, 5, 6)
    ]
    assert rows[0]["problem"] == f"{path}:2: candidate_0 is empty (or whitespace only)"
    assert rows[0]["file"] == str(path)
    clean = load_preferences(
        path.with_name("clean.jsonl").write_text(path.read_text().split("\n")[0] + "\n")
        and path.with_name("clean.jsonl")
    )
    assert record_dropped({"clean": clean}, tmp_path / "none.jsonl") == []
    assert not (tmp_path / "none.jsonl").exists()


def test_skip_never_skips_an_unreadable_file_nor_returns_an_empty_dataset(tmp_path):
    path = write_text(
        tmp_path / "all_bad.jsonl", '{"prompt": "q", "chosen": "", "rejected": "b"}\n'
    )
    error = problems_of(lambda p: load_preferences(p, bad_rows="skip"), path)
    assert error.summary == (
        f"dataset {path} has no valid row: bad_rows=skip left out all 1 of its rows; fix them"
    )
    assert error.problems == [f"{path}:1: chosen is empty (or whitespace only)"]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    error = problems_of(lambda p: load_prompts(p, bad_rows="skip"), broken)
    assert error.summary.endswith("; fix or remove these rows")
    assert error.problems[0].startswith(f"{broken}: cannot be read")
    with pytest.raises(RlhfkitError, match="bad_rows='maybe': choose one of error, skip"):
        load_prompts(path, bad_rows="maybe")
