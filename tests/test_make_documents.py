"""Tests of scripts/make_documents.py, the generator of demo summarization documents."""

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_documents.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_documents", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_documents = _load_script()


def sentence_count(text: str) -> int:
    # Independent of the script's splitter: count sentence ends followed by a space or the end.
    return len(re.findall(r'[.!?]"?(?=\s|$)', text))


@pytest.fixture(scope="module")
def rows():
    return make_documents.generate(480, seed=0)


def test_same_seed_gives_the_same_rows_and_another_seed_does_not():
    first = make_documents.generate(40, seed=3)
    assert first == make_documents.generate(40, seed=3)
    assert first != make_documents.generate(40, seed=4)


def test_a_shorter_run_is_a_prefix_of_a_longer_one(rows):
    assert make_documents.generate(40, seed=0) == rows[:40]


def test_rows_have_the_documented_keys_and_numbered_ids(rows):
    for i, row in enumerate(rows, start=1):
        assert set(row) == {"id", "topic", "input_text", "reference", "facts"}
        assert row["id"] == f"doc-{i:04d}"


def test_documents_have_90_to_220_words_and_4_to_8_sentences(rows):
    for row in rows:
        text = row["input_text"]
        assert 90 <= len(text.split()) <= 220, row["id"]
        assert 4 <= sentence_count(text) <= 8, row["id"]


def test_every_fact_appears_in_its_document(rows):
    for row in rows:
        assert 3 <= len(row["facts"]) <= 5, row["id"]
        for fact in row["facts"]:
            assert fact in row["input_text"], (row["id"], fact)


def test_reference_is_one_sentence_under_40_words(rows):
    for row in rows:
        reference = row["reference"]
        assert len(reference.split()) < 40, row["id"]
        assert sentence_count(reference) == 1, row["id"]
        assert reference[0].isupper(), row["id"]


def test_documents_are_unique_and_filled_in(rows):
    texts = [row["input_text"] for row in rows]
    assert len(set(texts)) == len(texts)
    assert not any("{" in text or "}" in text or "~" in text for text in texts)


def test_at_least_twelve_topics_evenly_spread(rows):
    counts = Counter(row["topic"] for row in rows)
    assert len(counts) >= 12
    assert max(counts.values()) - min(counts.values()) <= 1


def test_each_topic_uses_several_templates():
    for topic in make_documents.TOPICS:
        assert len(topic["templates"]) >= 3, topic["name"]
        assert len({template[:2] for template in topic["templates"]}) >= 3, topic["name"]


def test_main_writes_jsonl_and_reports(tmp_path, capsys):
    out = tmp_path / "demo" / "documents.jsonl"
    make_documents.main(["--out", str(out), "--n", "40", "--seed", "1"])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == make_documents.generate(40, seed=1)
    report = capsys.readouterr().out
    assert "40 documents" in report and "words: min" in report


def test_main_rejects_a_non_positive_count(tmp_path):
    with pytest.raises(SystemExit, match="--n must be at least 1"):
        make_documents.main(["--out", str(tmp_path / "x.jsonl"), "--n", "0"])


def test_report_names_a_row_that_breaks_the_rules(rows):
    bad = dict(rows[0], input_text="Too short.")
    with pytest.raises(SystemExit, match=r"doc-0001: .*words"):
        make_documents.report([bad, *rows[1:3]])
