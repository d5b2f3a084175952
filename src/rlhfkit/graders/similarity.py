"""Text-similarity metrics, written out (no runtime dependency). All return [0, 1]. Tests
check them against sacrebleu, nltk and rouge-score (tests/test_similarity_reference.py).

Tokens (for BLEU, GLEU and ROUGE): the text lowercased, then split on every character that
is not a letter or a digit (Unicode-aware), so `"Don't stop!"` is `don`, `t`, `stop`.
`fuzzy_match` works on the raw characters instead (case and punctuation count).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence

_WORD = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lowercased runs of letters and digits."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence, bit-parallel over `a`.

    Hyyrö (2004), "Bit-parallel LCS-length computation revisited": one big-integer update
    per element of `b`; the LCS is the number of zero bits left in V.
    """
    if not a or not b:
        return 0
    masks: dict[Hashable, int] = {}
    for i, element in enumerate(a):
        masks[element] = masks.get(element, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for element in b:
        u = v & masks.get(element, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def fuzzy_match(text: str, reference: str) -> float:
    """Indel similarity of the characters: 2·LCS / (|text| + |reference|).

    The normalised ratio rapidfuzz's `fuzz.ratio` computes (and what difflib's `ratio`
    approximates). Two empty strings match fully.
    """
    total = len(text) + len(reference)
    return 1.0 if total == 0 else 2 * lcs_length(text, reference) / total


def ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _overlap(candidate: Counter, reference: Counter) -> int:
    """Matches with clipping: each n-gram counts at most as often as in the reference."""
    return sum((candidate & reference).values())


def bleu(text: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU-4 with brevity penalty (Papineni et al. 2002), one reference.

    Smoothing (Lin & Och 2004, "BLEU+1"): unigram precision is unsmoothed; for n >= 2 the
    clipped matches and the candidate's n-gram count both get +1, so a short answer with
    no 4-gram match is not scored 0. BLEU = BP · exp(mean of log p_1..p_4), with
    BP = 1 when the candidate is longer than the reference, else exp(1 - r/c).
    """
    candidate, ref = tokenize(text), tokenize(reference)
    if not candidate or not ref:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        matches = _overlap(ngrams(candidate, n), ngrams(ref, n))
        total = max(len(candidate) - n + 1, 0)
        if n > 1:
            matches, total = matches + 1, total + 1
        if matches == 0:
            return 0.0
        log_precision += math.log(matches / total) / max_n
    c, r = len(candidate), len(ref)
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_precision)


def gleu(text: str, reference: str, max_n: int = 4) -> float:
    """Google's sentence GLEU (Wu et al. 2016, GNMT §7): min(precision, recall) over all
    1..4-grams together: clipped matches over the candidate's, and over the reference's,
    n-gram count."""
    candidate, ref = tokenize(text), tokenize(reference)
    matches = candidate_total = reference_total = 0
    for n in range(1, max_n + 1):
        candidate_ngrams, reference_ngrams = ngrams(candidate, n), ngrams(ref, n)
        matches += _overlap(candidate_ngrams, reference_ngrams)
        candidate_total += sum(candidate_ngrams.values())
        reference_total += sum(reference_ngrams.values())
    if candidate_total == 0 or reference_total == 0:
        return 0.0
    return min(matches / candidate_total, matches / reference_total)


def _f1(matches: int, candidate_total: int, reference_total: int) -> float:
    if matches == 0:
        return 0.0
    precision, recall = matches / candidate_total, matches / reference_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(text: str, reference: str, n: int) -> float:
    """ROUGE-N F1 (Lin 2004): clipped n-gram matches over candidate and reference counts."""
    candidate_ngrams, reference_ngrams = ngrams(tokenize(text), n), ngrams(tokenize(reference), n)
    matches = _overlap(candidate_ngrams, reference_ngrams)
    return _f1(matches, sum(candidate_ngrams.values()), sum(reference_ngrams.values()))


def rouge_l(text: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004): precision LCS/|candidate|, recall LCS/|reference| in tokens."""
    candidate, ref = tokenize(text), tokenize(reference)
    return _f1(lcs_length(candidate, ref), len(candidate), len(ref))
