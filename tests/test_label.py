"""`rlhfkit label`: the labelling page's API, a browser labelling by mouse and keyboard,
concurrent labellers, export to a preference dataset and a human column, agreement."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cdp import Chromium, chromium_or_skip
from rlhfkit.cli import main
from rlhfkit.data.formats import load_preferences
from rlhfkit.label.items import items_from_pairs
from rlhfkit.label.server import LabelServer, new_token
from rlhfkit.label.store import LabelStore

HOSTILE_A = "Rain is water <script>window.pwned = 1; document.title = 'PWNED'</script>"
HOSTILE_B = 'I do not know <img src=x onerror="window.pwned = 2"> rain'


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs_file(tmp_path: Path, n: int, hostile: bool = False) -> Path:
    rows = [
        {
            "input_text": f"Question {i}: what is {i} + {i}?",
            "candidate_0": f"{2 * i}.",
            "candidate_1": f"It is {2 * i + 1}.",
            "id": f"q{i}",
        }
        for i in range(n)
    ]
    if hostile:
        rows[0] = {
            "input_text": "What is <b>rain</b>?",
            "candidate_0": HOSTILE_A,
            "candidate_1": HOSTILE_B,
            "id": "hostile",
        }
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


class Client:
    """A labeller's HTTP client (one keep-alive connection)."""

    def __init__(self, server: LabelServer, token: str | None):
        host, port = server.server_address[:2]
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.token = token

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.getheader("Connection") == "close":
            self.conn.close()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if kind.startswith("application/json") else {}

    def next(self, labeller: str) -> dict:
        status, body = self.request("GET", f"/api/next?labeller={labeller}")
        assert status == 200, body
        return body

    def judge(self, item_id: str, labeller: str, choice: str, **more) -> tuple[int, dict]:
        body = {"item_id": item_id, "labeller": labeller, "choice": choice, **more}
        return self.request("POST", "/api/judgments", body)


@pytest.fixture
def served(tmp_path):
    """A label server on 12 pairs (the first hostile), in this process, on a free port."""

    def start(
        n: int = 12, per_item: int = 0, strength: bool = False
    ) -> tuple[LabelServer, LabelStore]:
        store = LabelStore(tmp_path / "labels.db", create=True)
        items, _ = items_from_pairs(pairs_file(tmp_path, n, hostile=True))
        store.add_items(items)
        server = LabelServer(store, "127.0.0.1", 0, new_token(), per_item, strength=strength)
        server.start_in_thread()
        started.append(server)
        return server, store

    started: list[LabelServer] = []
    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def rows(
    db: Path,
    query: str = "SELECT item_id, labeller, choice, left_side, comment, revisions FROM judgments",
) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


# ---------------------------------------------------------------- API


def test_every_api_route_refuses_a_request_without_the_right_token(served):
    server, _ = served()
    for token in (None, "wrong-token-0123456789", server.token + "x", ""):
        client = Client(server, token)
        for method, path, body in (
            ("GET", "/api/next?labeller=ann", None),
            ("GET", "/api/item?id=x&labeller=ann", None),
            ("POST", "/api/judgments", {"item_id": "x", "labeller": "ann", "choice": "left"}),
            ("GET", "/api/nowhere", None),
        ):
            status, answer = client.request(method, path, body)
            assert status == 401, (token, path)
            assert "token" in answer["error"]
    basic = Client(server, None).request(
        "GET", "/api/next?labeller=ann", headers={"Authorization": f"Basic {server.token}"}
    )
    assert basic[0] == 401
    assert rows(server.store.path) == []
    # the page itself holds no data and loads without the token, under a strict CSP
    page = http.client.HTTPConnection(*server.server_address[:2])
    page.request("GET", "/")
    response = page.getresponse()
    assert response.status == 200 and b'<script src="/app.js"' in response.read()
    assert "script-src 'self'" in response.getheader("Content-Security-Policy")
    assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_judging_through_the_api_stores_the_choice_behind_the_side_shown(served):
    server, store = served()
    client = Client(server, server.token)
    first = client.next("ann")
    item = first["item"]
    assert first["progress"] == {"total": 12, "judged": 0, "skipped": 0, "remaining": 12}
    assert item["position"] == 1 and item["prompt"] == [
        {"role": "user", "content": "What is <b>rain</b>?"}
    ]
    assert {item["left"], item["right"]} == {HOSTILE_A, HOSTILE_B}  # text as is, for textContent
    left_is_a = item["left"] == HOSTILE_A
    status, saved = client.judge(item["id"], "ann", "left", comment="clear", seconds=3.5)
    assert status == 200 and saved["saved"] and saved["new"] and saved["revisions"] == 0
    assert saved["progress"]["judged"] == 1 and saved["progress"]["remaining"] == 11
    ((item_id, labeller, choice, left_side, comment, revisions),) = rows(store.path)
    assert (item_id, labeller, comment, revisions) == (item["id"], "ann", "clear", 0)
    assert choice == left_side == ("A" if left_is_a else "B")
    # the next item is the second; the same labeller sees the same sides on a reload
    assert client.next("ann")["item"]["position"] == 2
    again = client.request("GET", f"/api/item?id={item['id']}&labeller=ann")[1]["item"]
    assert again["left"] == item["left"] and again["judged"] == {
        "choice": "left",
        "comment": "clear",
        "strength": None,
    }
    # judging it again replaces the judgment: one row, one revision
    client.judge(item["id"], "ann", "tie")
    assert [r[2] for r in rows(store.path)] == ["TIE"] and rows(store.path)[0][5] == 1


def test_sides_are_drawn_per_item_and_labeller_and_recorded(served):
    server, store = served(n=40)
    client = Client(server, server.token)
    lefts = []
    for _ in range(40):
        item = client.next("bo")["item"]
        a_left = item["left"] == store.items()[item["position"] - 1].answer_a
        lefts.append(a_left)
        assert client.judge(item["id"], "bo", "right")[0] == 200
    assert 8 <= sum(lefts) <= 32  # both sides occur (binomial(40, 0.5) leaves this range < 1e-4)
    stored = {r[0]: (r[2], r[3]) for r in rows(store.path)}
    for item, a_left in zip(store.items(), lefts, strict=True):
        choice, left_side = stored[item.id]
        assert left_side == ("A" if a_left else "B")
        assert choice == ("B" if a_left else "A")  # "right" was the other answer
    assert client.next("bo")["item"] is None
    # another labeller gets other draws for the same items
    others = [store.left_side(item.id, "cy") == "A" for item in store.items()]
    assert others != lefts


def test_each_labeller_resumes_where_they_stopped_and_quota_passes_items_on(served):
    server, _ = served(n=6, per_item=1)
    client = Client(server, server.token)
    for _ in range(2):
        item = client.next("ann")["item"]
        client.judge(item["id"], "ann", "left")
    skipped = client.next("ann")["item"]
    client.judge(skipped["id"], "ann", "skip")
    # a new session of ann continues with item 4; with one judgment per item, dan starts at 3
    # (ann skipped it) and then takes 5 and 6
    assert client.next("ann")["item"]["position"] == 4
    seen = []
    while (item := client.next("dan")["item"]) is not None:
        seen.append(item["position"])
        client.judge(item["id"], "dan", "tie")
    assert seen == [3, 4, 5, 6]
    assert client.next("ann") == {
        "item": None,
        "progress": {"total": 6, "judged": 3, "skipped": 1, "remaining": 0},
        "options": {"strength": False},
    }


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ({"item_id": "ITEM", "labeller": "ann", "choice": "maybe"}, {}, 400, "choice 'maybe'"),
        (
            {"item_id": "ITEM", "labeller": "ann", "choice": "left", "x": 1},
            {},
            400,
            "unknown field 'x'",
        ),
        ({"item_id": "ITEM", "labeller": "", "choice": "left"}, {}, 400, "labeller must be"),
        ({"item_id": "ITEM", "labeller": "a\u0000b", "choice": "left"}, {}, 400, "control"),
        ({"item_id": "ITEM", "labeller": "x" * 65, "choice": "left"}, {}, 400, "at most 64"),
        ({"item_id": 7, "labeller": "ann", "choice": "left"}, {}, 400, "item_id must be a string"),
        (
            {"item_id": "ITEM", "labeller": "ann", "choice": "left", "comment": "c" * 2001},
            {},
            400,
            "comment is 2001 characters",
        ),
        (
            {"item_id": "ITEM", "labeller": "ann", "choice": "left", "seconds": "3"},
            {},
            400,
            "seconds",
        ),
        (
            {"item_id": "ITEM", "labeller": "ann", "choice": "left", "seconds": True},
            {},
            400,
            "seconds",
        ),
        ({"item_id": "nope", "labeller": "ann", "choice": "left"}, {}, 404, "no item 'nope'"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "not JSON"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "JSON object"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "not JSON"),
        (b"item_id=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
        (b"{}" + b" " * 20000, {"Content-Type": "application/json"}, 413, "at most 16384"),
    ],
)
def test_bad_request_bodies_get_a_clear_4xx_and_store_nothing(
    served, body, headers, status, message
):
    server, store = served(n=3)
    client = Client(server, server.token)
    item_id = client.next("ann")["item"]["id"]
    if isinstance(body, dict) and body.get("item_id") == "ITEM":
        body = {**body, "item_id": item_id}
    got, answer = client.request("POST", "/api/judgments", body, headers)
    assert got == status and message in answer["error"], answer
    assert rows(store.path) == []
    # the connection (or a new one) still works afterwards
    assert Client(server, server.token).next("ann")["item"]["id"] == item_id


def test_a_strength_is_stored_with_an_a_or_b_choice_only_when_the_server_asks(served):
    server, store = served(n=3, strength=True)
    client = Client(server, server.token)
    first = client.next("kim")
    assert first["options"] == {"strength": True}
    item_id = first["item"]["id"]
    assert client.judge(item_id, "kim", "tie", strength="much")[0] == 400
    assert client.judge(item_id, "kim", "left", strength="enormously")[0] == 400
    status, saved = client.judge(item_id, "kim", "left", strength="much")
    assert status == 200 and saved["saved"]
    status, body = client.request("GET", f"/api/item?id={item_id}&labeller=kim")
    assert body["item"]["judged"] == {"choice": "left", "comment": "", "strength": "much"}
    [judgment] = store.judgments()
    assert judgment.strength == "much"
    # judged again without a strength: the strength goes too
    client.judge(item_id, "kim", "right")
    assert store.judgments()[0].strength is None
    # a server that does not ask refuses one
    plain, _ = served(n=2)
    other = Client(plain, plain.token)
    again = other.next("kim")
    assert again["options"] == {"strength": False}
    status, body = other.judge(again["item"]["id"], "kim", "left", strength="much")
    assert status == 400 and "strength is off" in body["error"]


def test_export_turns_the_majoritys_strengths_into_the_pairs_margin(tmp_path):
    store = LabelStore(tmp_path / "votes.db", create=True)
    items, _ = items_from_pairs(pairs_file(tmp_path, 2))
    store.add_items(items)
    for name, strength in (("ann", "clearly"), ("bob", "much"), ("cat", None)):
        left = store.left_side(items[0].id, name)  # everyone prefers B on item 0
        store.save(items[0].id, name, "left" if left == "B" else "right", "", 1.0, strength)
        store.save(
            items[1].id, name, "left" if store.left_side(items[1].id, name) == "A" else "right"
        )
    out = tmp_path / "prefs.jsonl"
    assert main(["label", "export", str(tmp_path / "votes.db"), f"out={out}"]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported[0]["choice"] == 1
    assert exported[0]["margin"] == pytest.approx((2 / 3 + 1) / 2)  # clearly, much; cat said none
    assert "margin" not in exported[1]
    # the reward loss reads it
    assert [r.margin for r in load_preferences(out).records] == [pytest.approx(5 / 6), None]


def test_a_store_made_before_strengths_opens_and_gains_the_column(tmp_path):
    db = tmp_path / "old.db"
    store = LabelStore(db, create=True)
    items, _ = items_from_pairs(pairs_file(tmp_path, 1))
    store.add_items(items)
    store.save(items[0].id, "ann", "tie")
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE judgments DROP COLUMN strength")
    reopened = LabelStore(db)
    assert [j.choice for j in reopened.judgments()] == ["TIE"]
    assert reopened.judgments()[0].strength is None


def test_bad_routes_and_queries_get_404_405_and_400(served):
    server, _ = served(n=2)
    client = Client(server, server.token)
    assert client.request("GET", "/api/judgments")[0] == 405
    assert client.request("POST", "/api/next?labeller=ann", {})[0] == 405
    assert client.request("DELETE", "/api/judgments")[0] == 405
    assert client.request("GET", "/api/nothing")[0] == 404
    assert client.request("GET", "/secret.db")[0] == 404
    assert (
        client.request("GET", "/api/next")[1]["error"] == "give the query parameter labeller once"
    )
    assert "unknown query parameter 'who'" in client.request("GET", "/api/next?who=x")[1]["error"]
    assert client.request("GET", "/api/item?id=zzz&labeller=ann")[0] == 404


def test_eight_labellers_at_once_give_exactly_1600_rows_and_a_retried_judgment_counts_once(
    served,
):
    server, store = served(n=200)
    errors: list[str] = []

    def label(labeller: str) -> None:
        client = Client(server, server.token)
        try:
            for _ in range(200):
                item = client.next(labeller)["item"]
                status, answer = client.judge(item["id"], labeller, ("left", "right", "tie")[_ % 3])
                if status != 200:
                    errors.append(f"{labeller}: {status} {answer}")
        except Exception as exc:  # reported below with the labeller
            errors.append(f"{labeller}: {exc!r}")

    def retry(twin: int) -> None:  # two tabs of one labeller sending every judgment
        client = Client(server, server.token)
        for item in store.items():
            status, _ = client.judge(item.id, "twin", "left")
            if status != 200:
                errors.append(f"twin {twin}: {status}")

    threads = [threading.Thread(target=label, args=(f"labeller-{k}",)) for k in range(8)]
    threads += [threading.Thread(target=retry, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    counts = dict(rows(store.path, "SELECT labeller, COUNT(*) FROM judgments GROUP BY labeller"))
    assert counts == {**{f"labeller-{k}": 200 for k in range(8)}, "twin": 200}
    assert rows(store.path, "SELECT COUNT(*) FROM judgments WHERE labeller != 'twin'") == [(1600,)]
    assert rows(store.path, "SELECT SUM(revisions) FROM judgments WHERE labeller = 'twin'") == [
        (200,)
    ]
    assert rows(store.path, "SELECT COUNT(DISTINCT item_id) FROM judgments") == [(200,)]
    assert rows(store.path, "PRAGMA journal_mode") == [("wal",)]


# ---------------------------------------------------------------- the browser


def test_a_person_labels_by_clicking_and_by_keyboard_and_model_text_stays_text(served, tmp_path):
    browser_binary = chromium_or_skip()
    server, store = served(n=6)
    page = Chromium(browser_binary, tmp_path / "profile")
    try:
        page.open(f"{server.url}#token={server.token}")
        page.click("#labeller")
        page.type_text("alice")
        page.click("#start")
        page.wait_for("document.getElementById('where').textContent.startsWith('item 1 of 6')")
        # the hostile answers are on the page as text: no element made, nothing ran
        shown = page.evaluate(
            "['left', 'right'].map((id) => document.getElementById(id).textContent)"
        )
        assert sorted(shown) == sorted([HOSTILE_A, HOSTILE_B])
        assert page.evaluate("document.getElementById('prompt').textContent").endswith(
            "What is <b>rain</b>?"
        )
        assert page.evaluate("document.querySelectorAll('img, b, #answers script').length") == 0
        assert page.evaluate("document.scripts.length") == 1  # app.js alone
        page.click("#choose-left")  # item 1 by mouse
        page.wait_for(
            "document.getElementById('status').textContent === 'Saved: item 1, A is better'"
        )
        page.wait_for("document.getElementById('where').textContent.startsWith('item 2 of 6')")
        page.press("b")  # item 2 by keyboard
        page.wait_for("document.getElementById('where').textContent.startsWith('item 3 of 6')")
        page.press("ArrowLeft")  # item 3
        page.wait_for("document.getElementById('where').textContent.startsWith('item 4 of 6')")
        page.press("t")  # item 4: tie
        page.wait_for("document.getElementById('where').textContent.startsWith('item 5 of 6')")
        page.click("#comment")  # keys typed into the comment box choose nothing
        for key in "ab":
            page.press(key)
        page.press("Escape")
        page.press("s")  # item 5: skipped, with the comment
        page.wait_for("document.getElementById('where').textContent.startsWith('item 6 of 6')")
        page.press("Backspace")  # back to item 5, shown with its earlier choice
        page.wait_for("document.getElementById('where').textContent.startsWith('item 5 of 6')")
        assert page.evaluate("document.getElementById('comment').value") == "ab"
        assert page.evaluate("document.querySelector('button.chosen').id") == "choose-skip"
        page.click("#choose-right")  # item 5 judged again
        page.wait_for("document.getElementById('where').textContent.startsWith('item 6 of 6')")
        progress = page.evaluate("document.getElementById('progress').textContent")
        assert progress == "alice: 5 judged (0 skipped), 1 to go, 6 items"
        # a reload (same browser: the name is remembered) resumes at item 6
        page.open(f"{server.url}#token={server.token}")
        assert page.evaluate("document.getElementById('labeller').value") == "alice"
        page.click("#start")
        page.wait_for("document.getElementById('where').textContent.startsWith('item 6 of 6')")
        page.screenshot(tmp_path / "label.png")
        assert (tmp_path / "label.png").stat().st_size > 10_000
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.evaluate("document.title") == "rlhfkit label"
        events = {e["method"] for e in page.events}
        assert "Page.javascriptDialogOpening" not in events
        assert "Runtime.exceptionThrown" not in events
    finally:
        page.close()
    items = store.items()
    stored = {r[0]: r for r in rows(store.path)}
    expected = ["left", "right", "left", "tie", "right"]  # as shown, items 1-5
    for item, shown in zip(items, expected, strict=False):
        _, labeller, choice, left_side, _, _ = stored[item.id]
        right_side = "B" if left_side == "A" else "A"
        assert labeller == "alice"
        assert choice == {"left": left_side, "right": right_side, "tie": "TIE"}[shown]
    assert stored[items[4].id][4:] == ("ab", 1)  # comment kept, judged twice
    assert len(stored) == 5


def test_a_person_says_how_much_better_when_the_server_asks(served, tmp_path):
    server, store = served(n=3, strength=True)
    page = Chromium(chromium_or_skip(), tmp_path / "profile")
    try:
        page.open(f"{server.url}#token={server.token}")
        page.click("#labeller")
        page.type_text("alice")
        page.click("#start")
        page.wait_for("document.getElementById('where').textContent.startsWith('item 1 of 3')")
        assert page.evaluate("document.getElementById('strength-box').hidden") is False
        page.evaluate(
            "(() => { const s = document.getElementById('strength'); s.value = 'much'; "
            "s.dispatchEvent(new Event('change')); })()"
        )
        page.press("a")  # the keys choose again once a strength is picked
        page.wait_for("document.getElementById('where').textContent.startsWith('item 2 of 3')")
        page.press("t")  # a tie (the box starts at "not said" on every item)
        page.wait_for("document.getElementById('where').textContent.startsWith('item 3 of 3')")
        page.press("Backspace")  # item 2 shown again, its strength not said
        page.wait_for("document.getElementById('where').textContent.startsWith('item 2 of 3')")
        assert page.evaluate("document.getElementById('strength').value") == ""
    finally:
        page.close()
    strengths = {j.item_id: (j.choice, j.strength) for j in store.judgments()}
    items = store.items()
    assert strengths[items[0].id][1] == "much" and strengths[items[0].id][0] in ("A", "B")
    assert strengths[items[1].id] == ("TIE", None)


def test_a_page_without_the_token_says_how_to_get_it(served, tmp_path):
    page = Chromium(chromium_or_skip(), tmp_path / "profile")
    server, store = served(n=2)
    try:
        page.open(server.url)
        assert "No access token" in page.evaluate("document.getElementById('status').textContent")
        page.click("#labeller")
        page.type_text("eve")
        page.click("#start")
        page.wait_for(
            "document.getElementById('status').textContent"
            ".startsWith('Not saved: missing or wrong access token')"
        )
    finally:
        page.close()
    assert rows(store.path) == []


# ---------------------------------------------------------------- export and stats


def label_db(tmp_path: Path) -> tuple[Path, list]:
    """Three labellers over 6 pairs, with the votes written in the A/B frame."""
    db = tmp_path / "votes.db"
    store = LabelStore(db, create=True)
    items, _ = items_from_pairs(pairs_file(tmp_path, 6))
    store.add_items(items)
    votes = {  # item -> (ann, bob, cat); "-" not judged
        0: "AAB",  # A by majority
        1: "BBB",  # B
        2: "TTA",  # TIE by majority
        3: "ABT",  # split
        4: "S--",  # only skipped
        5: "B--",  # one vote
    }
    names = ("ann", "bob", "cat")
    code = {"A": "A", "B": "B", "T": "TIE", "S": "SKIP"}
    for index, row in votes.items():
        for name, vote in zip(names, row, strict=True):
            if vote == "-":
                continue
            left = store.left_side(items[index].id, name)
            wanted = code[vote]
            shown = {"TIE": "tie", "SKIP": "skip"}.get(wanted) or (
                "left" if wanted == left else "right"
            )
            comment = "hard one" if (index, name) == (3, "bob") else ""
            store.save(items[index].id, name, shown, comment, 2.0 + index)
    return db, items


def test_export_writes_majority_preferences_and_a_human_column(tmp_path, capsys):
    db, items = label_db(tmp_path)
    out = tmp_path / "prefs.jsonl"
    assert main(["label", "export", str(db), f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 preference pairs" in printed and "1 ties are only in the human file" in printed
    assert "left out: 1 split, 1 unjudged" in printed
    prefs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["choice"]) for r in prefs] == [("q0", 0), ("q1", 1), ("q5", 1)]
    assert (
        prefs[0]["candidate_0"] == items[0].answer_a
        and prefs[0]["candidate_1"] == items[0].answer_b
    )
    assert prefs[0]["human_votes"] == {"A": 2, "B": 1, "TIE": 0}
    assert prefs[0]["human_labellers"] == ["ann", "bob", "cat"]
    dataset = load_preferences(out)  # what train-reward reads
    assert [r.chosen for r in dataset.records] == ["0.", "It is 3.", "It is 11."]
    human = [json.loads(line) for line in (tmp_path / "prefs.human.jsonl").read_text().splitlines()]
    assert [(r["id"], r["human_preference"]) for r in human] == [
        ("q0", "A"),
        ("q1", "B"),
        ("q2", "TIE"),
        ("q5", "B"),
    ]
    assert human[2]["answer_a"] == "4." and human[2]["input_text"] == "Question 2: what is 2 + 2?"
    # min_labellers=2 leaves out the item with one vote
    assert main(["label", "export", str(db), f"out={out}", "min_labellers=2"]) == 0
    assert "1 too few" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 2


def test_exported_files_feed_train_reward_and_sxs(tmp_path, capsys):
    db, _ = label_db(tmp_path)
    out = tmp_path / "prefs.jsonl"
    assert (
        main(["label", "export", str(db), f"out={out}", f"human_out={tmp_path / 'h.jsonl'}"]) == 0
    )
    run = tmp_path / "rm"
    args = [
        f"preference_dataset={out}",
        "large_model_reference=tiny-random-llama",
        "reward_model_train_steps=2",
        "batch_size=2",
        "dtype=fp32",
        f"output_dir={run}",
    ]
    assert main(["train-reward", *args]) == 0
    assert (run / "reward_model").is_dir()
    human = tmp_path / "h.jsonl"
    sxs = tmp_path / "sxs"
    grader = tmp_path / "longer.yaml"
    grader.write_text(
        "type: python\nname: longer\nsource: |\n  def grade(sample, item):\n"
        "      return len(sample['output_text']) / 100\n"
    )
    assert (
        main(
            [
                "sxs",
                f"a={human}",
                f"b={human}",
                "response_column_a=answer_a",
                "response_column_b=answer_b",
                "human_preference_column=human_preference",
                f"autorater=grader:{grader}",
                f"out={sxs}",
            ]
        )
        == 0
    )
    metrics = json.loads((sxs / "metrics.json").read_text())
    # the longer answer (B, "It is N.") wins every pair; humans said A, B, TIE, B
    assert metrics["human_labelled"] == 4 and metrics["human_compared"] == 4
    assert metrics["accuracy"] == 0.5


def test_stats_counts_each_labeller_and_gives_kappa_per_pair(tmp_path, capsys):
    db, _ = label_db(tmp_path)
    assert main(["label", "stats", str(db), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == 6 and stats["judgments"] == 14
    assert stats["items_judged"] == 5 and stats["items_judged_twice_or_more"] == 4
    ann = stats["labellers"][0]
    assert ann["labeller"] == "ann"
    assert (ann["judged"], ann["a"], ann["b"], ann["tie"], ann["skip"]) == (6, 2, 2, 1, 1)
    assert ann["median_seconds"] == 4.5  # 2, 3, 4, 5, 6, 7
    bob = stats["labellers"][1]
    assert bob["comments"] == 1
    pairs = {tuple(p["labellers"]): p for p in stats["agreement"]}
    # ann/bob share items 0-3: A/A, B/B, TIE/TIE, A/B -> p_o 3/4;
    # ann A2 B1 T1, bob A1 B2 T1 -> p_e (2*1 + 1*2 + 1*1)/16 = 5/16;
    # kappa (12/16 - 5/16)/(11/16) = 7/11
    assert pairs["ann", "bob"]["shared_items"] == 4
    assert pairs["ann", "bob"]["observed_agreement"] == 0.75
    assert pairs["ann", "bob"]["cohens_kappa"] == pytest.approx(7 / 11)
    # ann/cat: A/B, B/B, TIE/A, A/TIE -> p_o 1/4; ann A2 B1 T1, cat A1 B2 T1 -> p_e 5/16;
    # kappa (4/16 - 5/16)/(11/16) = -1/11
    assert pairs["ann", "cat"]["cohens_kappa"] == pytest.approx(-1 / 11)
    assert main(["label", "stats", str(db)]) == 0
    table = capsys.readouterr().out
    assert "ann / bob: 4 items, agreement 0.750, Cohen's kappa 0.636" in table
    assert stats["items_with_file_labels"] == 0 and stats["file_agreement"] == []
    assert "pairs file's own labels" not in table  # pairs still to judge carry no label


def test_stats_compare_each_labeller_with_the_labels_the_pairs_came_with(tmp_path, capsys):
    rows = [json.loads(line) for line in pairs_file(tmp_path, 6).read_text().splitlines()]
    for row, choice in zip(rows, (0, 1, 0, 1), strict=False):  # rows 4 and 5: still to judge
        row["choice"] = choice
    items, _ = items_from_pairs(write_jsonl(tmp_path / "labelled.jsonl", rows))
    assert [item.extra.get("file_choice") for item in items] == ["A", "B", "A", "B", None, None]
    db = tmp_path / "votes.db"
    store = LabelStore(db, create=True)
    store.add_items(items)
    for item, vote in zip(items, ("A", "B", "B", "TIE", "A", "B"), strict=True):
        left = store.left_side(item.id, "ann")
        shown = "tie" if vote == "TIE" else ("left" if vote == left else "right")
        store.save(item.id, "ann", shown, "", 3.0)
    assert main(["label", "stats", str(db), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items_with_file_labels"] == 4
    [ann] = stats["file_agreement"]
    # ann A B B TIE against the file's A B A B: 2 of 4 agree; ann A1 B2 T1, file A2 B2:
    # p_e = (1*2 + 2*2)/16 = 6/16, kappa = (8/16 - 6/16) / (10/16) = 0.2
    assert (ann["labeller"], ann["items"], ann["observed_agreement"]) == ("ann", 4, 0.5)
    assert ann["cohens_kappa"] == pytest.approx(0.2)
    low, high = ann["observed_agreement_ci95"]
    assert low < 0.5 < high
    assert main(["label", "stats", str(db)]) == 0
    table = capsys.readouterr().out
    assert "agreement with the pairs file's own labels (4 items have one):" in table
    assert "ann: 4 items, agreement 0.500 (95% interval" in table and "kappa 0.200" in table


# ---------------------------------------------------------------- the command


def read_until(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no line starting {prefix!r} in {''.join(seen)!r}")


def test_serve_command_prints_url_and_token_survives_a_kill_and_stops_on_ctrl_c(tmp_path):
    pairs = pairs_file(tmp_path, 5)
    db = tmp_path / "run.db"
    command = [sys.executable, "-m", "rlhfkit.cli", "label", "serve", f"db={db}", "port=0"]
    proc = subprocess.Popen(
        [*command, f"pairs={pairs}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert read_until(proc, "label store").endswith("5 items (5 new)")
        url = read_until(proc, "open http://127.0.0.1:").removeprefix("open ")
        token = read_until(proc, "token=").removeprefix("token=")
        assert url.endswith(f"/#token={token}") and len(token) >= 24
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        conn.request("GET", "/api/next?labeller=kim")
        assert conn.getresponse().status == 401
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for _ in range(2):
            conn = http.client.HTTPConnection(parts.hostname, parts.port)
            conn.request("GET", "/api/next?labeller=kim", headers=headers)
            item = json.loads(conn.getresponse().read())["item"]
            body = json.dumps({"item_id": item["id"], "labeller": "kim", "choice": "right"})
            conn.request("POST", "/api/judgments", body=body, headers=headers)
            assert json.loads(conn.getresponse().read())["saved"] is True
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=30)
    assert len(rows(db)) == 2
    # served again from the database alone: nothing lost, kim continues at item 3
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert read_until(proc, "label store").endswith("5 items (0 new)")
        url = read_until(proc, "open ")
        token = read_until(proc, "token=").removeprefix("token=")
        parts = urlsplit(url.removeprefix("open "))
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        conn.request("GET", "/api/next?labeller=kim", headers={"Authorization": f"Bearer {token}"})
        assert json.loads(conn.getresponse().read())["item"]["position"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "holds 2 judgment(s)" in out
    # `kill` (SIGTERM) stops it as cleanly as Ctrl-C
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    read_until(proc, "token=")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "holds 2 judgment(s)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pairs=missing.jsonl"], "does not exist"),
        (["pairs=P", "run=R"], "give one of pairs=, run= or a= b="),
        (["a=A.jsonl"], "needs both a= and b="),
        (["run=R"], "has no"),
        ([], "holds no items yet"),
        (["pairs=P", "token=short"], "at least 16 characters"),
        (["pairs=P", "port=70000"], "must be 0..65535"),
        (["pairs=BAD"], "choice must be 0 or 1"),
        (["pairs=P", "guidelines=missing.md"], "guidelines=missing.md: no such file"),
    ],
)
def test_serve_mistakes_exit_2_with_a_message_and_make_no_database(tmp_path, capsys, args, message):
    pairs = pairs_file(tmp_path, 2)
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": 2}],
    )
    (tmp_path / "run").mkdir()
    names = {"P": str(pairs), "R": str(tmp_path / "run"), "BAD": str(bad)}
    args = [a.split("=")[0] + "=" + names.get(a.split("=")[1], a.split("=")[1]) for a in args]
    db = tmp_path / "none.db"
    assert main(["label", "serve", f"db={db}", *args]) == 2
    assert message in capsys.readouterr().err
    assert not db.exists()


def test_the_page_shows_the_guidelines_with_their_html_as_text(tmp_path):
    rubric = tmp_path / "rubric.md"
    rubric.write_text(
        "# Rubric\n\nPrefer the answer with **more facts**.\n\n- brief\n- exact\n\n"
        "<script>window.pwned = 3</script>\n"
    )
    store = LabelStore(tmp_path / "labels.db", create=True)
    store.add_items(items_from_pairs(pairs_file(tmp_path, 2))[0])
    server = LabelServer(store, "127.0.0.1", 0, new_token(), guidelines=str(rubric))
    server.start_in_thread()
    try:
        host, port = server.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/")
        page = conn.getresponse().read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert '<details id="guidelines" open><summary>Guidelines: rubric.md</summary>' in page
    assert "<h1>Rubric</h1>" in page and "<strong>more facts</strong>" in page
    assert "<li>brief</li>" in page
    assert "<script>window.pwned" not in page and "&lt;script&gt;window.pwned" in page
    # without guidelines the page has none
    plain = LabelServer(store, "127.0.0.1", 0, new_token())
    try:
        assert b'<section id="guidelines" hidden></section>' in plain.page["/"][0]
    finally:
        plain.server_close()


def test_serve_takes_a_runs_base_and_tuned_answers(tmp_path):
    from rlhfkit.label.items import items_from_run

    infer = tmp_path / "run" / "infer"
    infer.mkdir(parents=True)
    prompts = [{"input_text": f"Summarise doc {i}.", "id": i} for i in range(3)]
    write_jsonl(
        infer / "base.jsonl", [{**p, "prediction": f"base {i}"} for i, p in enumerate(prompts)]
    )
    write_jsonl(
        infer / "tuned.jsonl", [{**p, "prediction": f"tuned {i}"} for i, p in enumerate(prompts)]
    )
    items = items_from_run(tmp_path / "run")
    assert [(i.answer_a, i.answer_b) for i in items] == [
        (f"base {k}", f"tuned {k}") for k in range(3)
    ]
    assert items[0].name_b.endswith("tuned.jsonl") and "prediction" not in items[0].extra
    assert items[1].source.endswith("base.jsonl:2")


def test_repeated_pairs_are_judged_once_and_said(tmp_path, capsys):
    rows_ = [{"input_text": "q", "candidate_0": "a", "candidate_1": "b"}] * 2
    pairs = write_jsonl(tmp_path / "dup.jsonl", rows_)
    db = tmp_path / "dup.db"
    store_items = LabelStore(db, create=True)
    from rlhfkit.label.server import LabelServeConfig, open_store

    opened = open_store(LabelServeConfig(pairs=str(pairs), db=str(db)))
    assert opened.added == 1 and store_items.count_items() == 1
    assert opened.notes == [f"{pairs}:2: the same pair as {pairs}:1; it is judged once"]


def test_a_file_that_is_not_a_label_store_is_refused_and_left_as_it_was(tmp_path, capsys):
    pairs = pairs_file(tmp_path, 2)
    other = tmp_path / "app.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    before = {p: p.read_bytes() for p in (pairs, other)}
    for db in (pairs, other):  # db= pointed at the data, or at another program's database
        assert main(["label", "serve", f"pairs={pairs}", f"db={db}"]) == 2
        assert main(["label", "stats", str(db)]) == 2
        assert main(["label", "export", str(db), f"out={tmp_path / 'o.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a label database" in err and "of something else" in err
    assert {p: p.read_bytes() for p in before} == before
    assert main(["label", "stats", str(tmp_path / "missing.db")]) == 2
    assert "no such label database" in capsys.readouterr().err
    db, _ = label_db(tmp_path)
    assert main(["label", "export", str(db)]) == 2
    assert "out=" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_silent_connections_time_out_and_a_flood_holds_no_threads(served, monkeypatch):
    import socket

    from rlhfkit.label import server as label_server

    monkeypatch.setattr(label_server._Handler, "timeout", 1)
    monkeypatch.setattr(label_server.LabelServer, "max_connections", 4)
    server, _ = served()
    host, port = server.server_address[:2]
    before = threading.active_count()
    idle = [socket.create_connection((host, port)) for _ in range(10)]  # send nothing
    time.sleep(0.3)
    assert threading.active_count() - before <= 4  # the others were closed at once
    # a body shorter than its Content-Length: the thread is freed after the timeout
    short = socket.create_connection((host, port))
    short.sendall(b"POST /api/judgments HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(1.5)
    assert threading.active_count() - before <= 1
    status, _ = Client(server, server.token).request("GET", "/api/next?labeller=ana")
    assert status == 200
    for connection in [*idle, short]:
        connection.close()


def test_a_busy_port_creates_no_database(tmp_path):
    import socket

    pairs = pairs_file(tmp_path, 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "labels.db"
        result = subprocess.run(
            [sys.executable, "-m", "rlhfkit.cli", "label", "serve", f"pairs={pairs}",
             f"db={db}", f"port={port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not db.exists()
