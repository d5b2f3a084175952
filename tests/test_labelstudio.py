"""`rlhfkit label to-labelstudio` / `from-labelstudio`: pairs out as Label Studio tasks, its
JSON export back in as judgments that `label export` and `label stats` read."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from rlhfkit.cli import main
from rlhfkit.label.store import LabelStore
from test_label import pairs_file


@pytest.fixture
def tasks(tmp_path) -> tuple[Path, list[dict]]:
    """Four pairs written as Label Studio tasks (with the strength question); the store."""
    pairs = pairs_file(tmp_path, 4)
    out = tmp_path / "tasks.json"
    args = [f"pairs={pairs}", f"db={tmp_path / 'labels.db'}", f"out={out}", "strength=true"]
    assert main(["label", "to-labelstudio", *args]) == 0
    return tmp_path / "labels.db", json.loads(out.read_text())


def chosen_side(task: dict, answer: str) -> str:
    """The side Label Studio shows `answer` ("A" or "B") on: left is answer1."""
    return "left" if task["data"]["rlhfkit_left"] == answer else "right"


def full_export(tasks: list[dict], votes: dict[str, list[tuple]]) -> list[dict]:
    """Label Studio's JSON export of the tasks: each annotator's (answer, strength) per task;
    None for a cancelled (skipped) annotation, "" for one submitted without a choice."""
    exported = []
    for n, task in enumerate(tasks):
        annotations = []
        for a, (who, per_task) in enumerate(votes.items()):
            vote = per_task[n]
            result = []
            if vote and vote[0]:
                result.append(
                    {
                        "id": f"r{n}{a}",
                        "from_name": "comparison",
                        "to_name": "comparison",
                        "type": "pairwise",
                        "origin": "manual",
                        "value": {"selected": chosen_side(task, vote[0])},
                    }
                )
            if vote and vote[1]:
                result.append(
                    {
                        "from_name": "strength",
                        "to_name": "prompt",
                        "type": "choices",
                        "value": {"choices": [vote[1]]},
                    }
                )
            completed_by = {"id": 7, "email": who} if "@" in who else int(who)
            annotations.append(
                {
                    "id": 100 * n + a,
                    "completed_by": completed_by,
                    "result": result,
                    "was_cancelled": vote is None,
                    "ground_truth": False,
                    "created_at": "2026-12-01T10:00:00.000000Z",
                    "lead_time": 4.5 + a,
                    "task": n + 1,
                }
            )
        exported.append({"id": n + 1, "annotations": annotations, "data": task["data"]})
    return exported


VOTES = {
    "ann@example.org": [("B", "much"), ("A", None), ("A", "slightly"), ("B", "clearly")],
    "12": [("B", "clearly"), ("B", None), None, ("", None)],
}


def test_pairs_go_out_as_label_studio_tasks_with_its_pairwise_config(tmp_path, tasks):
    db, written = tasks
    items = LabelStore(db).items()
    assert len(written) == 4 and [t["data"]["rlhfkit_item"] for t in written] == [
        i.id for i in items
    ]
    for task, item in zip(written, items, strict=True):
        data = task["data"]
        assert data["prompt"] == [{"author": "user", "text": item.messages[0].content}]
        first, second = (
            (item.answer_a, item.answer_b)
            if data["rlhfkit_left"] == "A"
            else (item.answer_b, item.answer_a)
        )
        assert (data["answer1"], data["answer2"]) == (first, second)
    config = ElementTree.parse(tmp_path / "tasks.xml").getroot()
    pairwise = config.find("Pairwise")
    assert pairwise.get("name") == "comparison" and pairwise.get("toName") == "answer1,answer2"
    assert {t.get("value") for t in config.iter("Text")} == {"$answer1", "$answer2"}
    assert config.find("Paragraphs").get("value") == "$prompt"
    strength = config.find("Choices")
    assert strength.get("name") == "strength" and strength.get("choice") == "single"
    assert [c.get("value") for c in strength] == ["slightly", "clearly", "much"]
    # without strength=true the config asks for the choice only
    args = [f"pairs={pairs_file(tmp_path, 4)}", f"db={db}", f"out={tmp_path / 'plain.json'}"]
    assert main(["label", "to-labelstudio", *args]) == 0
    assert ElementTree.parse(tmp_path / "plain.xml").getroot().find("Choices") is None


def test_a_label_studio_export_becomes_judgments_export_and_stats_read(tmp_path, tasks, capsys):
    db, written = tasks
    export = tmp_path / "export.json"
    export.write_text(json.dumps(full_export(written, VOTES)))
    capsys.readouterr()
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 0
    printed = capsys.readouterr().out
    assert "7 new, 0 replaced, 0 unchanged" in printed
    assert "stored 6 vote(s) and 1 skip(s)" in printed and "1 annotation(s) without" in printed
    assert "ann@example.org: 4 judgment(s)" in printed and "labelstudio-user-12: 3" in printed
    judgments = {(j.item_id, j.labeller): j for j in LabelStore(db).judgments()}
    ids = [t["data"]["rlhfkit_item"] for t in written]
    ann = [judgments[i, "ann@example.org"] for i in ids]
    assert [j.choice for j in ann] == ["B", "A", "A", "B"]
    assert [j.strength for j in ann] == ["much", None, "slightly", "clearly"]
    assert ann[0].seconds == 4.5
    assert judgments[ids[2], "labelstudio-user-12"].choice == "SKIP"  # cancelled
    assert (ids[3], "labelstudio-user-12") not in judgments  # submitted without a choice
    # the judgments are the page's: majority export (item 1 is split: left out) and stats
    out = tmp_path / "prefs.jsonl"
    assert main(["label", "export", str(db), f"out={out}"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["choice"]) for r in rows] == [("q0", 1), ("q2", 0), ("q3", 1)]
    assert rows[0]["margin"] == pytest.approx((1 + 2 / 3) / 2)  # much, clearly
    assert main(["label", "stats", str(db), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[-1])
    [pair] = stats["agreement"]
    assert pair["shared_items"] == 2 and pair["observed_agreement"] == 0.5
    # the same export again changes nothing; a changed annotation replaces its judgment
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 0
    assert "0 new, 0 replaced, 7 unchanged" in capsys.readouterr().out
    changed = dict(VOTES, **{"12": [("A", None), ("B", None), None, ("", None)]})
    export.write_text(json.dumps(full_export(written, changed)))
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 0
    assert "1 replaced" in capsys.readouterr().out
    again = {(j.item_id, j.labeller): j for j in LabelStore(db).judgments()}
    assert again[ids[0], "labelstudio-user-12"].choice == "A"
    assert again[ids[0], "labelstudio-user-12"].revisions == 1


def test_the_json_min_export_is_read_the_same(tmp_path, tasks):
    db, written = tasks
    records = [
        {
            **task["data"],
            "id": n + 1,
            "comparison": [{"selected": chosen_side(task, answer)}],
            "strength": "clearly",
            "annotator": "bo@example.org",
            "annotation_id": 50 + n,
            "lead_time": 3.0,
        }
        for n, (task, answer) in enumerate(zip(written, "ABBA", strict=True))
    ]
    export = tmp_path / "min.json"
    export.write_text(json.dumps(records))
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 0
    judgments = LabelStore(db).judgments()
    by_item = {j.item_id: j for j in judgments if j.labeller == "bo@example.org"}
    assert [by_item[t["data"]["rlhfkit_item"]].choice for t in written] == list("ABBA")
    assert {j.strength for j in judgments} == {"clearly"}


def test_exports_that_do_not_fit_exit_2_and_import_nothing(tmp_path, tasks, capsys):
    db, written = tasks
    export = tmp_path / "export.json"
    export.write_text('[{"id": 1, "annotations": []},\n oops]')
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 2
    assert f"{export}:2: not JSON" in capsys.readouterr().err
    foreign = full_export(written, VOTES)
    del foreign[1]["data"]["rlhfkit_item"]
    foreign[2]["data"]["rlhfkit_item"] = "0000000000000000"
    foreign[3]["annotations"][0]["result"][0]["value"]["selected"] = "middle"
    export.write_text(json.dumps(foreign))
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "nothing was imported" in err
    assert "task 2 (id 2): no data.rlhfkit_item" in err
    assert "item 0000000000000000 is not in" in err
    assert "pairwise selected is 'middle'" in err
    assert LabelStore(db).judgments() == []
    export.write_text(json.dumps({"tasks": []}))
    assert main(["label", "from-labelstudio", str(export), f"db={db}"]) == 2
    assert "a JSON list of tasks" in capsys.readouterr().err
    # the task file needs a source and a .json out
    assert main(["label", "to-labelstudio", f"out={tmp_path / 't.json'}"]) == 2
    assert "pairs" in capsys.readouterr().err
