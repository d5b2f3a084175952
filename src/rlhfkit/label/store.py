"""The label store: the items and every judgment, in one SQLite file (WAL mode).

Each write is one transaction, committed (synchronous=FULL) before the server answers, so
the page says "saved" only for a judgment that is on disk, and a killed server loses
nothing it confirmed. A labeller has one judgment per item: judging it again (the page's
Back, a retried request, a second tab) replaces it and counts a revision, so nothing is
counted twice. Several people can label at once: writers queue on SQLite's lock.

Sides: the page shows A on the left or on the right, drawn once per (item, labeller) from a
random salt kept in the file (so a reload shows the same sides); each judgment records
which answer was on the left.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlhfkit.data.records import Message
from rlhfkit.errors import RlhfkitError
from rlhfkit.label.items import LabelItem

CHOICES = ("A", "B", "TIE", "SKIP")
STRENGTHS = ("slightly", "clearly", "much")
"""How much better an A or B choice is, when the server asks (`strength=true`)."""
SHOWN_CHOICES = ("left", "right", "tie", "skip")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    messages TEXT NOT NULL,
    answer_a TEXT NOT NULL,
    answer_b TEXT NOT NULL,
    name_a TEXT NOT NULL,
    name_b TEXT NOT NULL,
    source TEXT NOT NULL,
    extra TEXT NOT NULL,
    chat INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    item_id TEXT NOT NULL REFERENCES items(id),
    labeller TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'TIE', 'SKIP')),
    left_side TEXT NOT NULL CHECK (left_side IN ('A', 'B')),
    comment TEXT NOT NULL DEFAULT '',
    seconds REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    strength TEXT,
    PRIMARY KEY (item_id, labeller)
);
CREATE INDEX IF NOT EXISTS judgments_by_labeller ON judgments (labeller);
"""


@dataclass(frozen=True)
class Judgment:
    """One stored judgment, in the A/B frame (`choice` is A, B, TIE or SKIP)."""

    item_id: str
    labeller: str
    choice: str
    left_side: str
    comment: str
    seconds: float | None
    created_at: str
    updated_at: str
    revisions: int
    strength: str | None = None
    """How much better the chosen answer is (STRENGTHS), when the labeller said."""


class LabelStore:
    """A label database file.

    Args:
        path: the SQLite file.
        create: make the file and its tables when missing (serving); otherwise the file must
            be an existing label database (export, stats).
    """

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise RlhfkitError(f"{self.path}: no such label database (rlhfkit label serve db=...)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(self.connect()) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if create and not tables:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if not {"meta", "items", "judgments"} <= tables:
                    raise RlhfkitError(
                        f"{self.path} is an SQLite database of something else (it has no "
                        "items and judgments tables); give another db= file"
                    )
                with transaction(conn):
                    conn.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (secrets.token_hex(16),)
                    )
                    columns = {r[1] for r in conn.execute("PRAGMA table_info(judgments)")}
                    if "strength" not in columns:  # a store made before strengths existed
                        conn.execute("ALTER TABLE judgments ADD COLUMN strength TEXT")
                self.salt = conn.execute("SELECT value FROM meta WHERE key='salt'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise RlhfkitError(f"{self.path} cannot be read as a label database: {exc}") from exc

    def connect(self) -> sqlite3.Connection:
        """A new connection (one per request; SQLite connections are not shared by threads)."""
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # ------------------------------------------------------------------ items

    def add_items(self, items: list[LabelItem]) -> int:
        """Add the items not yet stored, after the stored ones; returns how many were new."""
        with closing(self.connect()) as conn, transaction(conn):
            (last,) = conn.execute("SELECT COALESCE(MAX(position), 0) FROM items").fetchone()
            added = 0
            for item in items:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.id,
                        last + added + 1,
                        json.dumps([[m.role, m.content] for m in item.messages]),
                        item.answer_a,
                        item.answer_b,
                        item.name_a,
                        item.name_b,
                        item.source,
                        json.dumps(item.extra, ensure_ascii=False),
                        int(item.chat),
                    ),
                )
                added += cursor.rowcount
        return added

    def items(self) -> list[LabelItem]:
        """Every stored item, in position order."""
        with closing(self.connect()) as conn:
            rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY position").fetchall()
        return [_item(row) for row in rows]

    def count_items(self) -> int:
        with closing(self.connect()) as conn:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    # ------------------------------------------------------------------ the page's view

    def left_side(self, item_id: str, labeller: str) -> str:
        """Which answer ("A" or "B") this labeller sees on the left for this item."""
        digest = hashlib.sha256(f"{self.salt}\0{item_id}\0{labeller}".encode()).digest()
        return "B" if digest[0] & 1 else "A"

    def view(self, item_id: str, labeller: str) -> dict[str, Any] | None:
        """An item as the page shows it to a labeller (sides drawn, their judgment if any).

        Nothing says which answer is which: not the names, not the source file (a run's
        file is `base.jsonl`).
        """
        with closing(self.connect()) as conn:
            row = conn.execute(
                "SELECT position, messages, answer_a, answer_b FROM items WHERE id = ?",
                (item_id,),
            ).fetchone()
            if row is None:
                return None
            judged = conn.execute(
                "SELECT choice, left_side, comment, strength FROM judgments "
                "WHERE item_id = ? AND labeller = ?",
                (item_id, labeller),
            ).fetchone()
            (total,) = conn.execute("SELECT COUNT(*) FROM items").fetchone()
        position, messages, answer_a, answer_b = row
        left = self.left_side(item_id, labeller)
        view = {
            "id": item_id,
            "position": position,
            "total": total,
            "prompt": [
                {"role": role, "content": content} for role, content in json.loads(messages)
            ],
            "left": answer_a if left == "A" else answer_b,
            "right": answer_b if left == "A" else answer_a,
            "judged": None,
        }
        if judged is not None:
            choice, judged_left, comment, strength = judged
            view["judged"] = {
                "choice": shown_choice(choice, judged_left),
                "comment": comment,
                "strength": strength,
            }
        return view

    def next_item_id(self, labeller: str, per_item: int = 0) -> str | None:
        """The first item (by position) this labeller has not judged, or None when done.

        With `per_item` > 0, items that already have that many judgments (A, B or TIE) from
        other labellers are passed over.
        """
        query = f"SELECT id FROM items i WHERE {_open_for(per_item)} ORDER BY position LIMIT 1"
        with closing(self.connect()) as conn:
            row = conn.execute(query, {"who": labeller, "per_item": per_item}).fetchone()
        return None if row is None else row[0]

    def progress(self, labeller: str, per_item: int = 0) -> dict[str, int]:
        """How far a labeller is: items in all, judged and skipped by them, left for them."""
        with closing(self.connect()) as conn:
            (total,) = conn.execute("SELECT COUNT(*) FROM items").fetchone()
            judged, skipped = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(choice = 'SKIP'), 0) FROM judgments "
                "WHERE labeller = ?",
                (labeller,),
            ).fetchone()
            (remaining,) = conn.execute(
                f"SELECT COUNT(*) FROM items i WHERE {_open_for(per_item)}",
                {"who": labeller, "per_item": per_item},
            ).fetchone()
        return {"total": total, "judged": judged, "skipped": skipped, "remaining": remaining}

    # ------------------------------------------------------------------ judgments

    def save(
        self,
        item_id: str,
        labeller: str,
        shown: str,
        comment: str = "",
        seconds: float | None = None,
        strength: str | None = None,
        left_side: str | None = None,
    ) -> tuple[Judgment, bool]:
        """Store a labeller's choice as the page showed it ("left", "right", "tie", "skip"),
        with how much better (`STRENGTHS`) when they said. `left_side`: the answer (A or B)
        they saw on the left when another tool showed it (default: this page's draw).

        Returns:
            The stored judgment and whether it was new (False: it replaced their earlier
            judgment of this item).

        Raises:
            KeyError: no item has this id.
        """
        left = left_side or self.left_side(item_id, labeller)
        choice = stored_choice(shown, left)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with closing(self.connect()) as conn, transaction(conn):
            if conn.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is None:
                raise KeyError(item_id)
            old = conn.execute(
                "SELECT revisions FROM judgments WHERE item_id = ? AND labeller = ?",
                (item_id, labeller),
            ).fetchone()
            conn.execute(
                f"INSERT INTO judgments ({_JUDGMENT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?) "
                "ON CONFLICT (item_id, labeller) DO UPDATE SET choice = excluded.choice, "
                "left_side = excluded.left_side, comment = excluded.comment, "
                "seconds = excluded.seconds, updated_at = excluded.updated_at, "
                "strength = excluded.strength, revisions = revisions + 1",
                (item_id, labeller, choice, left, comment, seconds, now, now, strength),
            )
            row = conn.execute(
                f"SELECT {_JUDGMENT_COLUMNS} FROM judgments WHERE item_id = ? AND labeller = ?",
                (item_id, labeller),
            ).fetchone()
        return Judgment(*row), old is None

    def judgments(self) -> list[Judgment]:
        """Every judgment, by item position then labeller."""
        with closing(self.connect()) as conn:
            rows = conn.execute(
                f"SELECT {', '.join('j.' + c for c in _JUDGMENT_COLUMNS.split(', '))} "
                "FROM judgments j JOIN items i ON i.id = j.item_id ORDER BY i.position, j.labeller"
            ).fetchall()
        return [Judgment(*row) for row in rows]


_ITEM_COLUMNS = "id, messages, answer_a, answer_b, name_a, name_b, source, extra, chat"
_JUDGMENT_COLUMNS = (
    "item_id, labeller, choice, left_side, comment, seconds, created_at, updated_at, revisions, "
    "strength"
)


def _open_for(per_item: int) -> str:
    """SQL condition on item `i`: not judged by :who (and, with a quota, still open)."""
    condition = (
        "NOT EXISTS (SELECT 1 FROM judgments j WHERE j.item_id = i.id AND j.labeller = :who)"
    )
    if per_item > 0:
        condition += (
            " AND (SELECT COUNT(*) FROM judgments j WHERE j.item_id = i.id "
            "AND j.choice != 'SKIP') < :per_item"
        )
    return condition


def _item(row: tuple) -> LabelItem:
    _, messages, answer_a, answer_b, name_a, name_b, source, extra, chat = row
    turns = tuple(Message(role, content) for role, content in json.loads(messages))
    return LabelItem(
        turns, answer_a, answer_b, name_a, name_b, source, json.loads(extra), bool(chat)
    )


def stored_choice(shown: str, left_side: str) -> str:
    """The A/B choice behind a choice of a side ("left", "right", "tie", "skip")."""
    right_side = "B" if left_side == "A" else "A"
    return {"left": left_side, "right": right_side, "tie": "TIE", "skip": "SKIP"}[shown]


def shown_choice(choice: str, left_side: str) -> str:
    """The side a stored A/B choice was on, for showing it again."""
    if choice in ("A", "B"):
        return "left" if choice == left_side else "right"
    return choice.lower()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (the write lock taken at once, so no deadlock on upgrade)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
