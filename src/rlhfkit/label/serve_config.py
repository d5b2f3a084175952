"""The parameters of `rlhfkit label serve` (`LabelServeConfig`), and where the pairs to
judge come from (`PairSource`, which `label to-labelstudio` reads too)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import check, param


@dataclass
class PairSource:
    """Where the pairs to judge come from, and the label store they go into."""

    pairs: str | None = param(
        None,
        "Pairs to judge: a preference-style file (candidate_0/candidate_1, choice may be "
        "missing; or chosen/rejected, any supported format). A is candidate_0.",
    )
    run: str | None = param(
        None, "A pipeline run folder: judge its base (A) and tuned (B) answers (infer/*.jsonl)."
    )
    a: str | None = param(None, "Prediction file of model A (with b=, instead of pairs/run).")
    b: str | None = param(None, "Prediction file of model B.")
    response_column_a: str = param("prediction", "Column of a's rows holding its answer.")
    response_column_b: str = param("prediction", "Column of b's rows holding its answer.")
    db: str = param("labels.db", "SQLite label store; made when missing, added to when it exists.")

    def sources(self) -> list[str]:
        """The sources given (at most one is valid), checking a= and b= come together."""
        sources = [n for n in ("pairs", "run") if getattr(self, n)]
        if self.a or self.b:
            check(bool(self.a and self.b), "a", self.a or self.b, "needs both a= and b=")
            sources.append("a/b")
        check(len(sources) <= 1, "pairs", sources, "give one of pairs=, run= or a= b=")
        return sources


@dataclass
class LabelServeConfig(PairSource):
    """Parameters of `rlhfkit label serve`."""

    host: str = param("127.0.0.1", "Address to listen on; another than localhost exposes the page.")
    port: int = param(8765, "Port to listen on (0 = any free port).")
    token: str | None = param(
        None, "Access token (at least 16 characters); empty = a new random one at each start."
    )
    guidelines: str | None = param(
        None, "Markdown file with the labelling rubric, shown above every pair."
    )
    strength: bool = param(
        False,
        "Also ask how much better the chosen answer is (slightly, clearly, much), exported "
        "as the pair's margin.",
    )
    judgments_per_item: int = param(
        0,
        "Offer an item until this many labellers judged it (0 = everyone judges every item, "
        "which gives agreement figures).",
    )

    def validate(self) -> None:
        self.sources()
        check(0 <= self.port <= 65535, "port", self.port, "must be 0..65535")
        check(
            self.token is None or len(self.token) >= 16,
            "token",
            "(hidden)",
            "must be at least 16 characters (or left out for a random one)",
        )
        check(self.judgments_per_item >= 0, "judgments_per_item", self.judgments_per_item, ">= 0")
