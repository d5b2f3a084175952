"""Reading raw rows: file kinds, line numbers, and every problem collected with file:line."""

from __future__ import annotations

import gzip

import pytest

from data_helpers import problems_of, write_jsonl, write_text
from rlhfkit.data.reader import find_files, json_type_name, read_rows, scan_rows
from rlhfkit.data.records import Source
from rlhfkit.errors import DatasetError


def test_jsonl_rows_have_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = write_text(tmp_path / "d.jsonl", '{"a": 1}\n\n   \n{"a": 2}\r\n{"a": 3}')
    rows = read_rows(path)
    assert rows == [
        (Source(str(path), 1), {"a": 1}),
        (Source(str(path), 4), {"a": 2}),
        (Source(str(path), 5), {"a": 3}),
    ]


def test_jsonl_gz_is_read(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl.gz", [{"a": 1}, {"a": 2}])
    assert read_rows(path) == [(Source(str(path), 1), {"a": 1}), (Source(str(path), 2), {"a": 2})]


def test_json_list_elements_keep_the_line_where_they_start(tmp_path):
    text = (
        "[\n"  # line 1
        '  {"a": "x [ { , ]\\n"},\n'  # line 2: brackets and an escaped newline in a string
        "  {\n"  # line 3: a pretty-printed element starts here
        '    "a": 2\n'
        '  }, {"a": 3},\n'  # line 5: two elements on one line
        "\n"
        '  {"a": [1,\n'  # line 7: an element whose value spans lines
        "   2]}\n"
        "]\n"
    )
    path = write_text(tmp_path / "d.json", text)
    rows = read_rows(path)
    assert [(s.line, r) for s, r in rows] == [
        (2, {"a": "x [ { , ]\n"}),
        (3, {"a": 2}),
        (5, {"a": 3}),
        (7, {"a": [1, 2]}),
    ]
    assert {s.file for s, _ in rows} == {str(path)}


def test_empty_json_list_has_no_rows(tmp_path):
    assert read_rows(write_text(tmp_path / "d.json", " [ ] \n")) == []


def test_utf8_bom_is_accepted_in_jsonl_and_json(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"a": "\xc3\xa9"}\n')
    json_file = tmp_path / "d.json"
    json_file.write_bytes(b'\xef\xbb\xbf[\n{"a": 1}]')
    assert read_rows(jsonl) == [(Source(str(jsonl), 1), {"a": "é"})]
    assert read_rows(json_file) == [(Source(str(json_file), 2), {"a": 1})]


def test_folder_reads_every_dataset_file_sorted_and_skips_others(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"f": "b"}])
    write_jsonl(tmp_path / "a.jsonl.gz", [{"f": "a"}])
    write_text(tmp_path / "c.json", '[{"f": "c"}]')
    write_text(tmp_path / "notes.txt", "not data")
    write_jsonl(tmp_path / ".hidden.jsonl", [{"f": "hidden"}])
    (tmp_path / "sub.jsonl").mkdir()
    scan = scan_rows(tmp_path)
    assert scan.files == [str(tmp_path / n) for n in ("a.jsonl.gz", "b.jsonl", "c.json")]
    assert [row["f"] for _, row in scan.rows] == ["a", "b", "c"]
    assert scan.problems == []


def test_glob_reads_sorted_matches(tmp_path):
    for name in ("part-2.jsonl", "part-1.jsonl", "other.jsonl"):
        write_jsonl(tmp_path / name, [{"f": name}])
    pattern = str(tmp_path / "part-*.jsonl")
    assert find_files(pattern) == [tmp_path / "part-1.jsonl", tmp_path / "part-2.jsonl"]
    assert [row["f"] for _, row in read_rows(pattern)] == ["part-1.jsonl", "part-2.jsonl"]


def test_missing_path_says_where_relative_paths_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = problems_of(find_files, "nope.jsonl")
    assert str(error) == (
        f"dataset path nope.jsonl does not exist (relative paths start at {tmp_path}); "
        "check the spelling or pass the full path"
    )


def test_glob_without_match_is_an_error(tmp_path):
    pattern = str(tmp_path / "*.jsonl")
    error = problems_of(find_files, pattern)
    assert str(error).startswith(f"no files match the pattern {pattern!r}; check the pattern")


def test_folder_without_dataset_files_is_an_error(tmp_path):
    write_text(tmp_path / "readme.md", "hi")
    error = problems_of(find_files, tmp_path)
    assert str(error) == (
        f"folder {tmp_path} holds no .jsonl, .jsonl.gz or .json file; put the dataset files "
        "there or pass the path of a file"
    )


@pytest.mark.parametrize("name", ["d.csv", "d.json.gz", "d.parquet"])
def test_unsupported_suffix_is_an_error_that_lists_the_supported_ones(tmp_path, name):
    path = write_text(tmp_path / name, "x")
    message = str(problems_of(read_rows, path))
    assert message.startswith(f"{path} has an unsupported file type; rlhfkit reads .jsonl")
    assert ".jsonl.gz and .json (a list of objects)" in message


def test_every_problem_is_collected_with_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'{"a": 1}\n'  # 1: fine
        b'{"a": \n'  # 2: invalid JSON
        b'["not", "an", "object"]\n'  # 3: not an object
        b'{"a": "caf\xe9"}\n'  # 4: Latin-1 byte, not UTF-8
        b"\n"
        b'"text"\n'  # 6: not an object
        b'{"a": 2} {"a": 3}\n'  # 7: two values on one line
    )
    scan = scan_rows(path)
    assert scan.rows == [(Source(str(path), 1), {"a": 1})]
    assert scan.bad_rows == 5
    assert scan.problems == [
        f"{path}:2: invalid JSON: Expecting value at column 7",
        f'{path}:3: the row is a JSON array; every row must be an object ({{"key": value, ...}})',
        f"{path}:4: not valid UTF-8 at byte 10 of the line (0xe9); save the file as UTF-8",
        f'{path}:6: the row is a JSON string; every row must be an object ({{"key": value, ...}})',
        f"{path}:7: invalid JSON: Extra data at column 10",
    ]
    error = problems_of(read_rows, path)
    assert error.summary == f"dataset {path}: 5 bad row(s) cannot be read; fix or remove these rows"
    assert error.problems == scan.problems


def test_json_file_with_invalid_utf8_reports_every_bad_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"a": "\xff"},\n{"a": 1},\n{"a": "ok \xc3"}\n]')
    assert scan_rows(path).problems == [
        f"{path}:2: not valid UTF-8 at byte 7 of the line (0xff); save the file as UTF-8",
        f"{path}:4: not valid UTF-8 at byte 10 of the line (0xc3); save the file as UTF-8",
    ]


def test_json_file_with_invalid_json_reports_its_line(tmp_path):
    path = write_text(tmp_path / "d.json", '[\n  {"a": 1},\n  {"a": 2,}\n]')
    scan = scan_rows(path)
    assert [s.line for s, _ in scan.rows] == [2]
    assert scan.problems == [
        f"{path}:3: invalid JSON: Expecting property name enclosed in double quotes at column 11"
        "; the rest of the list was not read"
    ]


def test_json_file_missing_a_comma_and_with_trailing_data(tmp_path):
    missing_comma = write_text(tmp_path / "a.json", '[{"a": 1}\n {"a": 2}]')
    trailing = write_text(tmp_path / "b.json", '[{"a": 1}]\n\n[]')
    assert scan_rows(missing_comma).problems == [
        f"{missing_comma}:2: invalid JSON: expected ',' or ']'"
    ]
    assert scan_rows(trailing).problems == [
        f"{trailing}:3: invalid JSON: extra data after the closing ']'"
    ]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('{"a": 1}', "found a JSON object"),
        ("", "the file is empty"),
        ("\n\n 3", "found a JSON number"),
    ],
)
def test_json_file_that_is_not_a_list(tmp_path, text, found):
    path = write_text(tmp_path / "d.json", text)
    line = text.count("\n") + 1
    assert scan_rows(path).problems == [
        f"{path}:{line}: a .json dataset must be a list of objects ([{{...}}, {{...}}]) but "
        f"{found}; for one object per line name the file .jsonl"
    ]


def test_corrupt_gzip_is_reported_not_raised_as_a_traceback(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n')[:-6])
    problems = scan_rows(path).problems
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: cannot be read (")
    assert problems[0].endswith("); check the file is complete")


def test_more_than_twenty_problems_are_capped_in_the_message(tmp_path):
    path = write_text(tmp_path / "d.jsonl", "[]\n" * 25)
    error = problems_of(read_rows, path)
    assert len(error.problems) == 25
    lines = str(error).splitlines()
    assert len(lines) == 22
    assert lines[20] == (
        f"  - {path}:20: the row is a JSON array; every row must be an object "
        '({"key": value, ...})'
    )
    assert lines[21] == "  ... and 5 more problem(s)"


def test_problems_from_several_files_come_in_file_order(tmp_path):
    write_text(tmp_path / "b.jsonl", "1\n")
    write_text(tmp_path / "a.jsonl", '{"a": 1}\n{\n')
    assert [p.split(": ")[0] for p in scan_rows(tmp_path).problems] == [
        f"{tmp_path / 'a.jsonl'}:2",
        f"{tmp_path / 'b.jsonl'}:1",
    ]


def test_json_type_names():
    values = [{}, [], "s", 1, 1.5, True, None]
    assert [json_type_name(v) for v in values] == [
        "object",
        "array",
        "string",
        "number",
        "number",
        "boolean",
        "null",
    ]


def test_poisoned_rows_are_refused_with_file_and_line(tmp_path, monkeypatch):
    from rlhfkit.data import reader
    from rlhfkit.data.formats import load_dataset

    monkeypatch.setattr(reader, "MAX_ROW_BYTES", 300_000)
    row = '{"input_text": "%s", "candidate_0": "a", "candidate_1": "b", "choice": 0}'
    lines = [
        row % "x\\ud800",  # a lone surrogate: not text, would crash tokenizing
        row % "fine \\ud83d\\ude00",  # a surrogate pair is a character
        row[:-1] % "deep" + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        row % ("y" * 400_000),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dataset = load_dataset(path, bad_rows="skip")
    assert [r.text for r in dataset.records] == ["fine \U0001f600"]
    problems = [message for _, message in dataset.dropped]
    assert problems == [
        f"{path}:1: a string holds a lone surrogate (\\ud800), which is not text; fix its "
        "escape sequence (a pair like \\ud83d\\ude00 is fine)",
        f"{path}:3: the row is nested too deeply to read (about 1,000 levels at most)",
        f"{path}:4: the row is 0.4 MiB; rows are read up to 0.3 MiB: shorten or remove it",
    ]
    # a .json list cannot be read past a row it cannot parse: the file is lost, not a row,
    # so even bad_rows=skip stops
    listed = tmp_path / "rows.json"
    listed.write_text("[" + ",\n".join(lines) + "]\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(listed, bad_rows="skip")
    assert f"{listed}:3: the row is nested too deeply to read" in str(info.value)
    assert "the rest of the list was not read" in str(info.value)
