"""Win-rate intervals, Cohen's kappa, agreement metrics and judge-answer parsing, against
numbers worked by hand."""

import math

import pytest

from rlhfkit.eval.judge import Vote, combine_votes, judge_messages, parse_vote
from rlhfkit.graders.base import MODEL_SERVER, GradingError
from rlhfkit.stats import (
    alignment_metrics,
    cohens_kappa,
    length_order,
    pair_accuracy,
    pairs_to_tell_from_chance,
    wilson_interval,
    win_rates,
)


def test_wilson_interval_hand_worked():
    # 8 of 10, z = 1.959964 (z² = 3.841459):
    #   centre = (0.8 + z²/20) / (1 + z²/10) = 0.992073 / 1.384146 = 0.716740
    #   half   = z * sqrt(0.8*0.2/10 + z²/400) / 1.384146 = 1.959964 * 0.160012 / 1.384146
    #          = 0.226578
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490162, abs=2e-6)
    assert hi == pytest.approx(0.943318, abs=2e-6)


def test_wilson_interval_edges():
    # 0 of 12: centre = z²/24 / (1 + z²/12) = 0.160061 / 1.320122 = 0.121247 = half, so [0, 0.2425]
    lo, hi = wilson_interval(0, 12)
    assert lo == 0.0
    assert hi == pytest.approx(0.242494, abs=1e-5)
    assert wilson_interval(12, 12)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_win_rates_counts_ties_in_the_denominator():
    rates = win_rates(["A", "B", "B", "TIE", "B"])
    assert rates["n"] == 5
    assert rates["model_b_wins"] == 3
    assert rates["model_b_win_rate"] == pytest.approx(0.6)
    assert rates["model_a_win_rate"] == pytest.approx(0.2)
    assert rates["tie_rate"] == pytest.approx(0.2)
    assert rates["model_b_win_rate_ci95"] == list(wilson_interval(3, 5))


PREDICTED = ["A", "A", "B", "B", "TIE", "A", "B", "B", "A", "TIE"]
HUMAN = ["A", "B", "B", "B", "TIE", "A", "A", "B", "A", "B"]


def test_cohens_kappa_hand_worked():
    # agreement at 0, 2, 3, 4, 5, 7, 8: p_o = 0.7
    # autorater A 4, B 4, TIE 2; humans A 4, B 5, TIE 1
    # p_e = (4*4 + 4*5 + 2*1) / 100 = 0.38; kappa = (0.7 - 0.38) / 0.62 = 0.516129
    assert cohens_kappa(PREDICTED, HUMAN) == pytest.approx(0.516129, abs=1e-6)


def test_cohens_kappa_limits():
    assert cohens_kappa(["A", "B", "TIE"], ["A", "B", "TIE"]) == pytest.approx(1.0)
    # chance-level agreement: each says A half the time, independently
    assert cohens_kappa(["A", "A", "B", "B"], ["A", "B", "A", "B"]) == pytest.approx(0.0)
    # systematic disagreement is below zero: p_o 0, p_e 0.5
    assert cohens_kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)
    assert math.isnan(cohens_kappa([], []))
    with pytest.raises(ValueError):
        cohens_kappa(["A"], [])


def test_alignment_metrics_hand_worked():
    m = alignment_metrics(PREDICTED, HUMAN)
    assert m["accuracy"] == pytest.approx(0.7)
    # B as positive: true positives at 2, 3, 7; the autorater said B 4 times, humans 5 times
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["f1_score"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["cohens_kappa"] == pytest.approx(0.516129, abs=1e-6)
    assert m["confusion"]["B"] == {"A": 1, "B": 3, "TIE": 1}  # humans B, autorater columns
    assert sum(sum(row.values()) for row in m["confusion"].values()) == 10


@pytest.mark.parametrize(
    ("answer", "choice"),
    [
        ('{"choice": "B", "explanation": "B is shorter and correct."}', "B"),
        ('Sure! {"choice": "a", "explanation": "x"} Hope this helps.', "A"),
        ('{"Choice": "Response B", "explanation": "x"}', "B"),
        ('{"choice": "tie", "explanation": "both fine"}', "TIE"),
        ("Choice: B", "B"),
        ("After reading both, the winner is **A**.", "A"),
        ("B", "B"),
        ("TIE.", "TIE"),
        ("I think Response A is clearly better here.", "A"),
    ],
)
def test_parse_vote_reads_the_choice(answer, choice):
    assert parse_vote(answer).choice == choice


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "I cannot decide.",
        '{"choice": "C", "explanation": "neither"}',
        '{"choice": 1}',
        '{"verdict": maybe}',
        "Both responses summarise the text; hard to say.",
    ],
)
def test_parse_vote_malformed_answers_are_errors_not_crashes(answer):
    vote = parse_vote(answer)
    assert vote.choice is None
    assert vote.error


def test_parse_vote_keeps_transport_errors():
    vote = parse_vote(GradingError(MODEL_SERVER, "HTTP 500 from server"))
    assert vote.choice is None
    assert "HTTP 500" in vote.error


@pytest.mark.parametrize(
    ("first", "second_swapped", "choice", "confidence", "malformed"),
    [
        ("A", "B", "A", 1.0, 0),  # B in the swapped order is A: both orders agree
        ("B", "A", "B", 1.0, 0),
        ("A", "TIE", "A", 0.5, 0),
        ("A", "A", "TIE", 0.0, 0),  # the judge always picks the first answer: position bias
        ("TIE", "TIE", "TIE", 1.0, 0),
        ("B", None, "B", 0.5, 1),
        (None, None, None, 0.0, 2),
    ],
)
def test_combine_votes(first, second_swapped, choice, confidence, malformed):
    verdict = combine_votes(Vote(first, "one", None), Vote(second_swapped, "", "unreadable"))
    assert verdict.choice == choice
    assert verdict.confidence == confidence
    assert verdict.malformed == malformed


def test_judge_messages_show_both_answers_and_cut_a_long_request():
    messages = judge_messages("x" * 20000, "answer one", "answer two", "Be brief.")
    user = messages[-1][1]
    assert "[Response A]\nanswer one" in user and "[Response B]\nanswer two" in user
    assert "Be brief." in user and "[...cut]" in user
    assert len(user) < 9000


def test_pair_accuracy_counts_ties_half_and_splits_by_length():
    # credits 1, 0, 1/2 (a tie), 1; chosen longer in pairs 1 and 3, shorter in pair 2
    stats = pair_accuracy([1.0, -1.0, 0.0, 2.0], [1, -1, 1, 0])
    assert stats["n"] == 4 and stats["ties"] == 1
    assert stats["accuracy"] == pytest.approx(2.5 / 4)
    assert (stats["accuracy_ci95_low"], stats["accuracy_ci95_high"]) == pytest.approx(
        wilson_interval(2.5, 4)
    )
    assert stats["accuracy_chosen_longer"] == pytest.approx(1.5 / 2)  # pairs 1 and 3
    assert stats["accuracy_chosen_shorter"] == 0.0  # pair 2
    assert (stats["n_chosen_longer"], stats["n_chosen_shorter"]) == (2, 1)
    # the longer rule: right, wrong, right, a coin toss on equal lengths
    assert stats["longer_baseline_accuracy"] == pytest.approx(2.5 / 4)
    assert math.isnan(pair_accuracy([1.0], [0])["accuracy_chosen_longer"])
    with pytest.raises(ValueError):
        pair_accuracy([1.0], [])


def test_length_order_and_pairs_needed_to_tell_from_chance():
    assert (length_order("abc", "ab"), length_order("a", "ab"), length_order("a", "b")) == (
        1,
        -1,
        0,
    )
    # 1.96^2 / (4 * 0.1^2) = 96.04 -> 97 pairs, where the Wilson interval leaves 0.5
    assert pairs_to_tell_from_chance(0.6) == pairs_to_tell_from_chance(0.4) == 97
    assert wilson_interval(0.6 * 97, 97)[0] > 0.5 >= wilson_interval(0.6 * 96, 96)[0]
    assert pairs_to_tell_from_chance(1.0) == 4 and wilson_interval(4, 4)[0] > 0.5
    assert pairs_to_tell_from_chance(0.5) is None
