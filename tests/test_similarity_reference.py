"""rlhfkit's BLEU, GLEU and ROUGE against the maintained implementations (sacrebleu, nltk,
rouge-score) on 400 generated pairs: equal to 1e-9.

The references are given rlhfkit's tokens (sacrebleu without its own tokenizer, nltk the
token lists); rouge-score tokenizes by itself as rlhfkit does for ASCII text (lowercase,
runs of letters and digits). sacrebleu's `add-k` smoothing with k=1 is Lin & Och's BLEU+1.
"""

from __future__ import annotations

import logging
import random

import pytest
from nltk.translate.gleu_score import sentence_gleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from rlhfkit.graders.similarity import bleu, gleu, rouge_l, rouge_n, tokenize

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "Quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "river",
    "bank,",
    "money.",
    "Bank!",
    "it's",
    "42",
    "3.5",
    "well-known",
    "THE",
    "(aside)",
    "x_y",
]


def pairs(n: int = 400) -> list[tuple[str, str]]:
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))

    return [(sentence(), sentence()) for _ in range(n)]


def test_bleu_equals_sacrebleus_sentence_bleu_with_add_one_smoothing():
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # it suggests effective order
    metric = BLEU(tokenize="none", smooth_method="add-k", smooth_value=1, effective_order=False)
    for text, reference in pairs():
        theirs = metric.sentence_score(" ".join(tokenize(text)), [" ".join(tokenize(reference))])
        assert bleu(text, reference) == pytest.approx(theirs.score / 100, abs=1e-9)


def test_gleu_equals_nltks_sentence_gleu():
    for text, reference in pairs():
        theirs = sentence_gleu([tokenize(reference)], tokenize(text))
        assert gleu(text, reference) == pytest.approx(theirs, abs=1e-9)


def test_rouge_equals_rouge_scores_f_measures():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rouge3", "rougeL"])
    for text, reference in pairs():
        theirs = scorer.score(reference, text)
        for n in (1, 2, 3):
            assert rouge_n(text, reference, n) == pytest.approx(
                theirs[f"rouge{n}"].fmeasure, abs=1e-9
            )
        assert rouge_l(text, reference) == pytest.approx(theirs["rougeL"].fmeasure, abs=1e-9)
