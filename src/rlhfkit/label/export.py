"""Judgments out of the label store: a preference dataset, a human column, agreement.

`export_labels` turns each item's votes (A, B or TIE; skips are not votes) into one verdict
by strict majority. A and B verdicts become rlhf_pipeline preference rows (`train-reward`
reads them; with strengths, their `margin`); every verdict, TIE included, becomes a row of
the human file, which `rlhfkit sxs` reads with `human_preference_column=human_preference`.
Items without a majority, or judged by fewer than `min_labellers`, are left out and counted.

`label_stats` counts each labeller's judgments and gives Cohen's kappa for every pair of
labellers over the items both judged (A, B or TIE), and, where the pairs file came with
labels (`file_choice`), each labeller's agreement with them.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from rlhfkit.config import check, param
from rlhfkit.data.formats import Dataset
from rlhfkit.data.records import PreferenceRecord, PromptRecord, Source
from rlhfkit.fileio import atomic_write_jsonl
from rlhfkit.label.items import FILE_CHOICE, LabelItem
from rlhfkit.label.store import Judgment, LabelStore
from rlhfkit.stats import cohens_kappa, wilson_interval

VOTES = ("A", "B", "TIE")
MARGINS = {"slightly": 1 / 3, "clearly": 2 / 3, "much": 1.0}
"""A strength's margin in the reward loss, -log sigmoid(r_chosen - r_rejected - margin):
Llama 2's small margins (Touvron et al. 2023, table 27: slightly better 1/3, better 2/3,
significantly better 1)."""
HUMAN_COLUMN = "human_preference"


@dataclass
class LabelExportConfig:
    """Parameters of `rlhfkit label export DB`."""

    out: str = param("", "Preference dataset to write (rlhf_pipeline rows, for train-reward).")
    human_out: str = param(
        "",
        "File of A/B/TIE verdicts in a `human_preference` column with the answers as "
        "`answer_a`/`answer_b`, for `rlhfkit sxs`; empty = OUT with `.human.jsonl`.",
    )
    min_labellers: int = param(1, "Export an item once at least this many labellers voted.")

    def validate(self) -> None:
        check(bool(self.out), "out", self.out, "is required (out=prefs.jsonl)")
        check(self.min_labellers >= 1, "min_labellers", self.min_labellers, "must be at least 1")

    @property
    def human_path(self) -> Path:
        if self.human_out:
            return Path(self.human_out)
        out = Path(self.out)
        stem = out.name.removesuffix(".gz").removesuffix(".jsonl")
        return out.with_name(f"{stem}.human.jsonl")


@dataclass
class ExportResult:
    preferences: int
    human: int
    counts: dict[str, int]
    out: Path
    human_out: Path


def export_labels(db: str | Path, config: LabelExportConfig) -> ExportResult:
    """Write the preference dataset and the human file; returns what was written and left."""
    from rlhfkit.data.convert import to_rows

    store = LabelStore(db)
    by_item = _by_item(store.judgments())
    counts: Counter[str] = Counter()
    preferences: list[PreferenceRecord] = []
    prompts: list[PromptRecord] = []
    verdicts: list[tuple[LabelItem, str]] = []
    for item in store.items():
        judgments = by_item.get(item.id, [])
        votes = Counter(j.choice for j in judgments if j.choice in VOTES)
        verdict = _verdict(votes, config.min_labellers)
        counts[verdict if verdict in ("unjudged", "too_few", "split") else "exported"] += 1
        if verdict not in VOTES:
            continue
        extra = {**item.extra, **_provenance(judgments, votes)}
        record = PromptRecord(item.messages, Source(*_split_source(item.source)), extra, item.chat)
        prompts.append(record)
        verdicts.append((item, verdict))
        if verdict == "TIE":
            counts["ties"] += 1
            continue
        chosen, rejected = (item.answer_a, item.answer_b)
        if verdict == "B":
            chosen, rejected = rejected, chosen
        choice = 0 if verdict == "A" else 1
        margin = _margin([j.strength for j in judgments if j.choice == verdict])
        preferences.append(
            PreferenceRecord(
                item.messages, chosen, rejected, record.source, choice, margin, extra, item.chat
            )
        )
    files = [str(db)]
    preference_rows = to_rows(Dataset("preference", "rlhf_text", preferences, files), "rlhf")
    human_rows = [
        {**row, "answer_a": item.answer_a, "answer_b": item.answer_b, HUMAN_COLUMN: verdict}
        for row, (item, verdict) in zip(
            to_rows(Dataset("prompt", "rlhf_text", prompts, files), "rlhf"), verdicts, strict=True
        )
    ]
    atomic_write_jsonl(config.out, preference_rows)
    atomic_write_jsonl(config.human_path, human_rows)
    return ExportResult(
        len(preference_rows), len(human_rows), dict(counts), Path(config.out), config.human_path
    )


def _margin(strengths: list[str | None]) -> float | None:
    """The pair's margin: the mean of MARGINS over the majority's votes that said how much
    better; None when none did."""
    said = [MARGINS[s] for s in strengths if s is not None]
    return sum(said) / len(said) if said else None


def _by_item(judgments: list[Judgment]) -> dict[str, list[Judgment]]:
    by_item: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        by_item[judgment.item_id].append(judgment)
    return by_item


def _verdict(votes: Counter[str], min_labellers: int) -> str:
    """A, B or TIE by strict majority; else why not: unjudged, too_few or split."""
    total = sum(votes.values())
    if total == 0:
        return "unjudged"
    if total < min_labellers:
        return "too_few"
    label, count = votes.most_common(1)[0]
    return label if 2 * count > total else "split"


def _provenance(judgments: list[Judgment], votes: Counter[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "human_votes": {v: votes[v] for v in VOTES},
        "human_labellers": sorted(j.labeller for j in judgments if j.choice in VOTES),
    }
    comments = [{"labeller": j.labeller, "comment": j.comment} for j in judgments if j.comment]
    if comments:
        fields["human_comments"] = comments
    return fields


def _split_source(source: str) -> tuple[str, int]:
    file, _, line = source.rpartition(":")
    return (file, int(line)) if line.isdigit() else (source, 0)


# ------------------------------------------------------------------ stats


def label_stats(db: str | Path) -> dict[str, Any]:
    """Counts per labeller, and Cohen's kappa for each pair of labellers who shared items.

    Per labeller: judgments by choice, comments, the median seconds an item took, and
    `left_share`, the share of their A/B votes that went to the answer on the left (far
    from 0.5 over many items means they favour a side, since sides are drawn at random).
    """
    store = LabelStore(db)
    judgments = store.judgments()
    by_labeller: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        by_labeller[judgment.labeller].append(judgment)
    labellers = [_labeller_counts(name, by_labeller[name]) for name in sorted(by_labeller)]
    voted = {
        name: {j.item_id: j.choice for j in own if j.choice in VOTES}
        for name, own in by_labeller.items()
    }
    agreement = []
    for first, second in combinations(sorted(voted), 2):
        shared = sorted(set(voted[first]) & set(voted[second]))
        if not shared:
            continue
        labels_1 = [voted[first][i] for i in shared]
        labels_2 = [voted[second][i] for i in shared]
        equal, kappa = _agreement(labels_1, labels_2)
        agreement.append(
            {
                "labellers": [first, second],
                "shared_items": len(shared),
                "observed_agreement": equal / len(shared),
                "cohens_kappa": kappa,
            }
        )
    items_votes = Counter(j.item_id for j in judgments if j.choice in VOTES)
    file_labels = {
        item.id: item.extra[FILE_CHOICE] for item in store.items() if FILE_CHOICE in item.extra
    }
    return {
        "items": store.count_items(),
        "items_judged": len(items_votes),
        "items_judged_twice_or_more": sum(n >= 2 for n in items_votes.values()),
        "judgments": len(judgments),
        "labellers": labellers,
        "agreement": agreement,
        "items_with_file_labels": len(file_labels),
        "file_agreement": _file_agreement(voted, file_labels),
    }


def _agreement(first: list[str], second: list[str]) -> tuple[int, float]:
    """How many labels are equal, and Cohen's kappa, of two label lists over the same items."""
    equal = sum(x == y for x, y in zip(first, second, strict=True))
    return equal, cohens_kappa(first, second)


def _file_agreement(
    voted: dict[str, dict[str, str]], file_labels: dict[str, str]
) -> list[dict[str, Any]]:
    """Each labeller's votes against the labels the pairs file came with: the share equal
    (a TIE vote never is), Cohen's kappa, and the 95% interval of the share."""
    rows = []
    for name in sorted(voted):
        shared = sorted(set(voted[name]) & set(file_labels))
        if not shared:
            continue
        equal, kappa = _agreement(
            [voted[name][i] for i in shared], [file_labels[i] for i in shared]
        )
        rows.append(
            {
                "labeller": name,
                "items": len(shared),
                "observed_agreement": equal / len(shared),
                "observed_agreement_ci95": list(wilson_interval(equal, len(shared))),
                "cohens_kappa": kappa,
            }
        )
    return rows


def _labeller_counts(name: str, own: list[Judgment]) -> dict[str, Any]:
    """One labeller's judgments by choice, comments, left_share and median seconds."""
    choices = Counter(j.choice for j in own)
    decided = [j for j in own if j.choice in ("A", "B")]
    seconds = [j.seconds for j in own if j.seconds is not None]
    return {
        "labeller": name,
        "judged": len(own),
        **{choice.lower(): choices[choice] for choice in ("A", "B", "TIE", "SKIP")},
        "comments": sum(bool(j.comment) for j in own),
        "left_share": (
            sum(j.choice == j.left_side for j in decided) / len(decided) if decided else None
        ),
        "median_seconds": statistics.median(seconds) if seconds else None,
    }


def stats_lines(stats: dict[str, Any]) -> list[str]:
    """`label_stats` as a readable table."""
    lines = [
        f"{stats['items']} items; {stats['items_judged']} with a vote, "
        f"{stats['items_judged_twice_or_more']} with two or more; {stats['judgments']} judgments",
        "",
        f"{'labeller':<20} {'judged':>6} {'A':>5} {'B':>5} {'tie':>5} {'skip':>5} "
        f"{'notes':>5} {'left':>5} {'median s':>8}",
    ]
    for row in stats["labellers"]:
        left = "-" if row["left_share"] is None else f"{row['left_share']:.2f}"
        median = "-" if row["median_seconds"] is None else f"{row['median_seconds']:.1f}"
        lines.append(
            f"{row['labeller'][:20]:<20} {row['judged']:>6} {row['a']:>5} {row['b']:>5} "
            f"{row['tie']:>5} {row['skip']:>5} {row['comments']:>5} {left:>5} {median:>8}"
        )
    lines += ["", "agreement (A/B/TIE votes on items both judged):"]
    if not stats["agreement"]:
        lines.append("  no two labellers judged the same item")
    for pair in stats["agreement"]:
        first, second = pair["labellers"]
        lines.append(
            f"  {first} / {second}: {pair['shared_items']} items, agreement "
            f"{pair['observed_agreement']:.3f}, Cohen's kappa {pair['cohens_kappa']:.3f}"
        )
    if stats["items_with_file_labels"]:
        lines += [
            "",
            f"agreement with the pairs file's own labels "
            f"({stats['items_with_file_labels']} items have one):",
        ]
        for row in stats["file_agreement"]:
            low, high = row["observed_agreement_ci95"]
            lines.append(
                f"  {row['labeller']}: {row['items']} items, agreement "
                f"{row['observed_agreement']:.3f} (95% interval {low:.3f} to {high:.3f}), "
                f"Cohen's kappa {row['cohens_kappa']:.3f}"
            )
        if not stats["file_agreement"]:
            lines.append("  no labeller has voted on a labelled item yet")
    return lines
