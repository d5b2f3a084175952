"""`text_similarity`: a similarity metric between two rendered templates, in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from rlhfkit.graders import similarity
from rlhfkit.graders.base import Grader, GradingError, Item, Sample, Score
from rlhfkit.graders.fields import Fields
from rlhfkit.graders.templates import Template

METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": similarity.fuzzy_match,
    "bleu": similarity.bleu,
    "gleu": similarity.gleu,
    **{f"rouge_{n}": partial(similarity.rouge_n, n=n) for n in range(1, 6)},
    "rouge_l": similarity.rouge_l,
}
"""Metrics computed from the two texts alone (see `similarity` for each definition)."""

COSINE = "cosine"
"""Cosine similarity of all-MiniLM-L6-v2 sentence embeddings, clamped to [0, 1]: texts
pointing away from each other (a negative cosine) score 0, like unrelated ones."""

KEYS = ("input", "reference", "evaluation_metric", "pass_threshold")
NOT_AVAILABLE = {
    "meteor": "is not available: METEOR needs WordNet's synonym data (nltk downloads it "
    "from the internet; rlhfkit runs offline and ships none). Use bleu, gleu, rouge_1 to "
    "rouge_5, rouge_l or fuzzy_match for overlap, or cosine for meaning",
}
"""OpenAI metrics rlhfkit does not compute, with why and what to use instead."""


class TextSimilarityGrader(Grader):
    """The similarity of `input` to `reference` under `evaluation_metric`.

    Args:
        name: the grader's name.
        input: template of the text graded, usually `{{sample.output_text}}`.
        reference: template of the text it is compared with.
        evaluation_metric: `fuzzy_match`, `bleu`, `gleu`, `rouge_1` .. `rouge_5`,
            `rouge_l` or `cosine`.
    """

    type = "text_similarity"

    def __init__(self, name: str, input: Template, reference: Template, evaluation_metric: str):
        super().__init__(name)
        self.input = input
        self.reference = reference
        self.evaluation_metric = evaluation_metric

    def score_batch(self, samples: Sequence[Sample], items: Sequence[Item]) -> list[Score]:
        pairs: list[tuple[str, str] | GradingError] = []
        for sample, item in zip(samples, items, strict=True):
            try:
                pairs.append((self.input.render(sample, item), self.reference.render(sample, item)))
            except GradingError as error:
                pairs.append(error)
        ok = [p for p in pairs if not isinstance(p, GradingError)]
        if self.evaluation_metric == COSINE:
            values = iter(_cosine(ok) if ok else [])
        else:
            metric = METRICS[self.evaluation_metric]
            values = iter([metric(text, reference) for text, reference in ok])
        return [
            self.failed(p) if isinstance(p, GradingError) else Score(next(values)) for p in pairs
        ]


def _cosine(pairs: list[tuple[str, str]]) -> list[float]:
    """Cosine similarities, each distinct text embedded once, all in one batch."""
    from rlhfkit.graders.embeddings import embed

    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    index = {t: i for i, t in enumerate(texts)}
    vectors = embed(texts)  # (N, 384), unit length
    rows = [index[text] for text, _ in pairs]
    cols = [index[reference] for _, reference in pairs]
    cosines = (vectors[rows] * vectors[cols]).sum(-1)  # (len(pairs),)
    return cosines.clamp(0.0, 1.0).tolist()


def build(fields: Fields, name: str) -> TextSimilarityGrader | None:
    """A TextSimilarityGrader from its mapping (None after a recorded problem)."""
    fields.ignored("pass_threshold", "a pass/fail cut of OpenAI's evals; rewards use the score")
    metric = fields.config.get("evaluation_metric")
    if isinstance(metric, str) and metric in NOT_AVAILABLE:
        fields.problem("evaluation_metric", f"{metric!r} {NOT_AVAILABLE[metric]}")
        return None
    parts = (
        fields.template("input"),
        fields.template("reference"),
        fields.choice("evaluation_metric", (*METRICS, COSINE)),
    )
    if None in parts:
        return None
    return TextSimilarityGrader(name, *parts)
