"""Graders without models or worker processes: templates, metrics, formulas, loading, CLI.

Python graders, score_model graders and the cosine metric: tests/test_graders_runtime.py.
"""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.errors import ConfigError
from rlhfkit.graders import GRADER_TYPES, Sample, load_grader
from rlhfkit.graders.base import GradingError
from rlhfkit.graders.formula import FormulaMathError, parse_formula
from rlhfkit.graders.similarity import (
    bleu,
    fuzzy_match,
    gleu,
    lcs_length,
    rouge_l,
    rouge_n,
    tokenize,
)
from rlhfkit.graders.templates import parse_template

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "graders"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *args], capture_output=True, text=True, timeout=120
    )


def string_check(operation="eq", reference="{{item.answer}}", **extra):
    return {
        "type": "string_check",
        "name": "check",
        "input": "{{sample.output_text}}",
        "reference": reference,
        "operation": operation,
        **extra,
    }


# ---------------------------------------------------------------- templates


def test_template_fills_item_fields_nested_and_indexed_and_sample_fields():
    template = parse_template(
        "{{ item.doc.title }}|{{item.facts.1}}|{{item.n}}|{{item.flag}}|{{sample.output_text}}"
    )
    item = {"doc": {"title": "Bridge"}, "facts": ["a", "b"], "n": 3, "flag": True}
    # strings go in as they are, other values as JSON (True -> true)
    assert template.render(Sample("ok"), item) == "Bridge|b|3|true|ok"


def test_template_reads_output_json_and_records_an_answer_that_is_not_json():
    template = parse_template("{{sample.output_json.verdict}} / {{sample.output_json}}")
    assert template.render(Sample('{"verdict": "yes"}'), {}) == 'yes / {"verdict": "yes"}'
    with pytest.raises(GradingError) as info:
        template.render(Sample("yes"), {})
    assert info.value.kind == "sample_parse"


def test_template_missing_field_is_a_grading_error_naming_the_field():
    with pytest.raises(GradingError) as info:
        parse_template("{{item.doc.author}}").render(Sample(""), {"doc": {"title": "x"}})
    assert info.value.kind == "invalid_variable"
    assert "'author'" in info.value.message and "title" in info.value.message


def test_template_keeps_single_braces_and_a_stray_closing_pair_as_text():
    text = 'Answer as {"score": x} or {"a": {"b": 1}}'
    assert parse_template(text).render(Sample(""), {}) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello {{item.x", "unclosed '{{' at column 7"),
        ("{{foo.bar}}", "unknown variable 'foo'"),
        ("{{sample.text}}", "unknown sample field"),
        ("{{sample.output_text.x}}", "unknown sample field"),
        ("{{item}}", "needs a field"),
        ("ab{{item.a b}}", "malformed placeholder '{{item.a b}}' at column 3"),
        ("{{item..a}}", "malformed placeholder"),
        ("{{{item.a}}}", "malformed placeholder"),
    ],
)
def test_template_syntax_errors_name_the_problem_and_column(text, message):
    with pytest.raises(ValueError) as info:
        parse_template(text)
    assert message in str(info.value)


# ---------------------------------------------------------------- similarity metrics


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("Don't stop—now! Café_au lait 42x") == [
        "don", "t", "stop", "now", "café", "au", "lait", "42x",
    ]  # fmt: skip


def test_lcs_length_matches_dynamic_programming():
    def slow(a, b):
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = (
                    table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
                )
        return table[-1][-1]

    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 70))]  # over 64: several words
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == slow(a, b)


def test_fuzzy_match_is_the_indel_ratio_of_characters():
    # LCS("kitten", "sitting") = "ittn" = 4; 2*4 / (6 + 7) = 8/13 (rapidfuzz ratio 61.54)
    assert fuzzy_match("kitten", "sitting") == pytest.approx(8 / 13)
    assert fuzzy_match("", "") == 1.0
    assert fuzzy_match("abc", "") == 0.0
    assert fuzzy_match("Cat", "cat") == pytest.approx(2 * 2 / 6)  # case counts


# candidate "the cat sat on the mat" (6 tokens), reference "the cat is on the mat" (6)
CANDIDATE, REFERENCE = "The cat sat on the mat.", "the cat is on the mat"


def test_bleu_on_a_hand_worked_pair():
    # 1-grams: the×2, cat, on, mat match (clipped) -> p1 = 5/6 (unsmoothed)
    # 2-grams: the cat, on the, the mat of 5 -> p2 = (3+1)/(5+1) = 4/6
    # 3-grams: on the mat of 4 -> p3 = (1+1)/(4+1) = 2/5
    # 4-grams: none of 3 -> p4 = (0+1)/(3+1) = 1/4
    # BP: c = r = 6 -> exp(1 - 6/6) = 1;  BLEU = (5/6 · 4/6 · 2/5 · 1/4)^(1/4) = (1/18)^(1/4)
    assert bleu(CANDIDATE, REFERENCE) == pytest.approx((1 / 18) ** 0.25)
    # short candidate "the cat": p1 = 2/2, p2 = (1+1)/(1+1), p3 = p4 = (0+1)/(0+1) = 1
    # BP = exp(1 - 6/2) = exp(-2)
    assert bleu("the cat", REFERENCE) == pytest.approx(math.exp(-2))
    assert bleu("dog", REFERENCE) == 0.0  # no unigram match
    assert bleu("", REFERENCE) == 0.0
    assert bleu(REFERENCE, REFERENCE) == pytest.approx(1.0)


def test_gleu_is_the_minimum_of_precision_and_recall_over_1_to_4_grams():
    # matches 5 + 3 + 1 + 0 = 9; candidate n-grams 6+5+4+3 = 18; reference 18 -> 9/18
    assert gleu(CANDIDATE, REFERENCE) == pytest.approx(0.5)
    # "the cat": matches 2 + 1 = 3 of 2 + 1 = 3 candidate n-grams (precision 1) and of
    # 18 reference n-grams (recall 1/6) -> 1/6
    assert gleu("the cat", REFERENCE) == pytest.approx(1 / 6)
    assert gleu("", REFERENCE) == 0.0


def test_rouge_n_and_rouge_l_f1():
    # ROUGE-1: 5 matches, P = R = 5/6 -> F1 5/6;  ROUGE-2: 3 of 5 each way -> 3/5
    assert rouge_n(CANDIDATE, REFERENCE, 1) == pytest.approx(5 / 6)
    assert rouge_n(CANDIDATE, REFERENCE, 2) == pytest.approx(3 / 5)
    # ROUGE-3: "on the mat" 1 of 4 each way -> 1/4;  ROUGE-4: no match -> 0
    assert rouge_n(CANDIDATE, REFERENCE, 3) == pytest.approx(1 / 4)
    assert rouge_n(CANDIDATE, REFERENCE, 4) == 0.0
    # ROUGE-L: LCS "the cat on the mat" = 5 -> P = R = 5/6
    assert rouge_l(CANDIDATE, REFERENCE) == pytest.approx(5 / 6)
    # "the cat": P = 2/2, R = 2/6 -> F1 = 2 · 1 · (1/3) / (4/3) = 1/2
    assert rouge_n("the cat", REFERENCE, 1) == pytest.approx(0.5)
    assert rouge_l("mat the", REFERENCE) == pytest.approx(2 * 0.5 * (1 / 6) / (0.5 + 1 / 6))


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("fuzzy_match", None),
        ("bleu", (1 / 18) ** 0.25),
        ("gleu", 0.5),
        ("rouge_1", 5 / 6),
        ("rouge_2", 3 / 5),
        ("rouge_3", 1 / 4),
        ("rouge_4", 0.0),
        ("rouge_5", 0.0),
        ("rouge_l", 5 / 6),
    ],
)
def test_text_similarity_grader_uses_the_named_metric(metric, expected):
    grader = load_grader(
        {
            "type": "text_similarity",
            "name": "sim",
            "input": "{{sample.output_text}}",
            "reference": "{{item.reference}}",
            "evaluation_metric": metric,
        }
    )
    result = grader.grade(CANDIDATE, {"reference": REFERENCE})
    if expected is None:
        expected = fuzzy_match(CANDIDATE, REFERENCE)
    assert result.reward == pytest.approx(expected)
    assert result.errors == []


# ---------------------------------------------------------------- string_check


@pytest.mark.parametrize(
    ("operation", "answer", "reference", "reward"),
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "Paris", "paris", 0.0),
        ("ne", "Paris", "paris", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "It is Paris.", "Paris", 1.0),
        ("like", "It is PARIS.", "Paris", 0.0),
        ("ilike", "It is PARIS.", "paris", 1.0),
        ("ilike", "It is Rome.", "paris", 0.0),
    ],
)
def test_string_check_operations(operation, answer, reference, reward):
    grader = load_grader(string_check(operation))
    assert grader.grade(answer, {"answer": reference}).reward == reward


def test_string_check_compares_a_number_field_as_its_json_text():
    assert load_grader(string_check()).grade("42", {"answer": 42}).reward == 1.0


def test_missing_item_field_is_a_recorded_error_with_reward_zero():
    result = load_grader(string_check()).grade("Paris", {"question": "capital?"})
    assert result.reward == 0.0
    (error,) = result.errors
    assert error["grader"] == "check" and error["kind"] == "invalid_variable"
    assert "answer" in error["message"]


def test_grade_batch_keeps_order_and_times_every_sample():
    grader = load_grader(string_check())
    results = grader.grade_batch([Sample("a"), "b", "c"], [{"answer": "a"}, {"answer": "x"}, {}])
    assert [r.reward for r in results] == [1.0, 0.0, 0.0]
    assert [len(r.errors) for r in results] == [0, 0, 1]
    assert all(r.execution_time > 0 for r in results)
    assert set(results[0].to_dict()) == {"reward", "sub_rewards", "errors", "execution_time"}
    with pytest.raises(ValueError, match="2 samples but 1 items"):
        grader.grade_batch(["a", "b"], [{}])


# ---------------------------------------------------------------- formula


def evaluate(source, **values):
    return parse_formula(source, set(values)).evaluate(values)


def test_formula_precedence_and_associativity():
    assert evaluate("a + b * c", a=1, b=2, c=3) == 7  # 1 + 6
    assert evaluate("(a + b) * c", a=1, b=2, c=3) == 9
    assert evaluate("a - b - c", a=10, b=3, c=2) == 5  # left-associative: (10-3)-2
    assert evaluate("a / b / c", a=8, b=2, c=2) == 2  # (8/2)/2
    assert evaluate("2 ^ 3 ^ 2") == 512  # right-associative: 2^(3^2) = 2^9
    assert evaluate("-a ^ 2", a=3) == -9  # -(3^2)
    assert evaluate("2 ^ -1") == 0.5
    assert evaluate("--a + +b", a=1, b=2) == 3
    assert evaluate("1.5e1 + .5") == 15.5


def test_formula_functions():
    assert evaluate("min(a, b, 0.5)", a=0.9, b=0.7) == 0.5
    assert evaluate("max(a)", a=0.3) == 0.3
    assert evaluate("abs(a - 1)", a=0.25) == 0.75
    assert evaluate("floor(a) + ceil(a)", a=1.5) == 3  # 1 + 2
    assert evaluate("exp(0) + sqrt(9) + log(exp(2))") == pytest.approx(6)  # 1 + 3 + 2
    assert parse_formula("a + 1", {"a", "b"}).names == {"a"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "expected a number, a name or '(' but found ')' at column 2"),
        ("a.b", "unexpected character '.' at column 2"),
        ("'x'", 'unexpected character "\'" at column 1'),
        ("a + c", "unknown name 'c' (sub-graders: a, b) at column 5"),
        ("eval(a)", "unknown function 'eval'"),
        ("a[0]", "unexpected character '['"),
        ("a b", "unexpected 'b' at column 3"),
        ("(a + b", "expected ')' but found the end"),
        ("abs(a, b)", "abs() takes 1 argument(s), got 2"),
        ("max", "max(...) is a function"),
        ("", "empty formula"),
        ("1e999", "too large"),
        ("a; b", "unexpected character ';' at column 2"),
        ("lambda: a", "unexpected character ':' at column 7"),
        ("a" + " + a" * 300, "at most 1000 are allowed"),
        ("(" * 40 + "a" + ")" * 40, "nested more than 32 levels deep at column 34"),
        ("-" * 40 + "a", "nested more than 32 levels deep"),
        ("2" + "^2" * 40, "nested more than 32 levels deep"),
    ],
)
def test_formula_refuses_hostile_or_broken_input_with_its_position(source, message):
    with pytest.raises(ValueError) as info:
        parse_formula(source, {"a", "b"})
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a / b", "division by zero"),
        ("log(b)", "math domain error"),
        ("sqrt(b - 1)", "math domain error"),
        ("(b - 8) ^ 0.5", "math domain error"),
        ("exp(1000)", "overflow"),
        ("10 ^ 400", "overflow"),
    ],
)
def test_formula_math_errors_at_run_time(source, message):
    formula = parse_formula(source, {"a", "b"})
    with pytest.raises(FormulaMathError, match=message):
        formula.evaluate({"a": 1.0, "b": 0.0})


# ---------------------------------------------------------------- multi


def multi(calculate_output, **graders):
    return {
        "type": "multi",
        "name": "combo",
        "graders": graders,
        "calculate_output": calculate_output,
    }


def test_multi_combines_sub_rewards_with_the_formula():
    grader = load_grader(
        multi(
            "0.25 * exact + 0.75 * rouge",
            exact=string_check(name="exact"),
            rouge={
                "type": "text_similarity",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference}}",
                "evaluation_metric": "rouge_1",
            },
        )
    )
    result = grader.grade(CANDIDATE, {"answer": "x", "reference": REFERENCE})
    # exact 0 (no match), rouge_1 5/6 -> 0.25·0 + 0.75·5/6 = 0.625
    assert result.sub_rewards == {"exact": 0.0, "rouge": pytest.approx(5 / 6)}
    assert result.reward == pytest.approx(0.625)
    assert result.errors == []


def test_multi_with_a_failed_sub_grader_gives_zero_and_passes_the_error_on():
    miss, other = string_check(), string_check("ne")
    del miss["name"], other["name"]  # sub-graders are named by their keys
    grader = load_grader(multi("1 - miss", miss=miss, other=other))
    result = grader.grade("a", {})  # no item.answer: both sub-graders record an error
    # 1 - 0 would be 1.0; an error must not turn into a reward
    assert result.reward == 0.0
    assert result.sub_rewards == {"miss": 0.0, "other": 0.0}
    assert [e["grader"] for e in result.errors] == ["miss", "other"]
    assert {e["kind"] for e in result.errors} == {"invalid_variable"}


def test_multi_division_by_zero_is_a_recorded_formula_error():
    grader = load_grader(multi("1 / ok", ok=string_check()))
    assert grader.grade("a", {"answer": "a"}).reward == 1.0  # 1 / 1
    result = grader.grade("a", {"answer": "b"})  # 1 / 0
    assert result.reward == 0.0 and result.sub_rewards == {"ok": 0.0}
    (error,) = result.errors
    assert (error["grader"], error["kind"]) == ("combo", "formula_math")
    assert "division by zero" in error["message"]


def test_nested_multi_reports_its_direct_sub_rewards():
    inner = multi("2 * a", a=string_check())
    grader = load_grader(multi("inner + b", inner=inner, b=string_check("ne")))
    result = grader.grade("x", {"answer": "x"})
    assert result.sub_rewards == {"inner": 2.0, "b": 0.0}  # inner: 2·1, b: "x" ne "x" false
    assert result.reward == 2.0


# ---------------------------------------------------------------- loading and validation


def test_load_grader_lists_every_problem_with_its_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        """
type: multi
graders:
  length:
    type: string_check
    input: "{{sample.output_text}"
    reference: "{{foo.bar}}"
    operation: equals
  sim:
    type: text_similarity
    input: "{{sample.output_text}}"
    reference: x
    evaluation_metric: rouge
    extra: 1
  q:
    type: nope
  bad-name: {type: string_check, input: a, reference: b, operation: eq}
calculate_output: "length + sim + q + bad-name"
"""
    )
    with pytest.raises(ConfigError) as info:
        load_grader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid grader (8 problems):")
    for expected in (
        "graders.length.input: unclosed '{{' at column 1",
        "graders.length.reference: unknown variable 'foo'",
        "graders.length.operation: 'equals' is not allowed; choose one of: eq, ne, like, ilike",
        "graders.sim.extra: unknown key for a text_similarity grader",
        "graders.sim.evaluation_metric: 'rouge' is not allowed; choose one of: fuzzy_match, "
        "bleu, gleu, rouge_1",
        "graders.q.type: 'nope' is not a grader type; types: string_check, text_similarity, "
        "python, score_model, multi",
        "graders.bad-name: a sub-grader name must be",
        "calculate_output: unknown name 'bad' (sub-graders: bad-name, length, q, sim)",
    ):
        assert expected in message, expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "x"}, "type: missing; types: " + ", ".join(GRADER_TYPES)),
        ({"type": "string_check", "input": "a", "reference": "b"}, "operation: missing"),
        (string_check(name=""), "name: must not be empty"),
        (string_check(input=3), "input: must be a string, got int 3"),
        ({"type": "multi", "graders": {}, "calculate_output": "1"}, "graders: must be a mapping"),
    ],
)
def test_invalid_graders_are_config_errors(config, message):
    with pytest.raises(ConfigError) as info:
        load_grader(config)
    assert message in str(info.value)


def test_openai_fields_without_a_local_use_load_and_are_named_in_one_line(caplog):
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "smollm2-135m-instruct",
        # OpenAI's content parts; their texts are joined as they stand
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Grade {{sample.output_text}}\n"},
                    {"type": "input_text", "text": "from 0 to 1."},
                ],
            }
        ],
        "sampling_params": {"seed": 7, "reasoning_effort": "low", "temperature": 0.5},
    }
    similar = {
        "type": "text_similarity",
        "name": "sim",
        "input": "{{sample.output_text}}",
        "reference": "{{item.ref}}",
        "evaluation_metric": "bleu",
        "pass_threshold": 0.5,
    }
    grader = {"type": "multi", "graders": {"judge": judge, "sim": similar}}
    grader["calculate_output"] = "judge + sim"
    with caplog.at_level("WARNING", logger="rlhfkit.graders.load"):
        loaded = load_grader(grader)
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("grader: accepted but not used here: ")
    assert "graders.judge.sampling_params.reasoning_effort (a local judge does not reason" in line
    assert "graders.sim.pass_threshold (a pass/fail cut" in line
    judge_grader = loaded.graders["judge"]
    assert judge_grader.backend.sampling.seed == 7
    [(role, template)] = judge_grader.input
    assert role == "user"
    assert template.render(Sample("X"), {}) == "Grade X\nfrom 0 to 1."
    # what stays refused names what to do instead
    with pytest.raises(ConfigError) as info:
        load_grader({**similar, "evaluation_metric": "meteor"})
    assert "'meteor' is not available: METEOR needs WordNet's synonym data" in str(info.value)
    judge["input"][0]["content"].append({"type": "input_image", "image_url": "x.png"})
    with pytest.raises(ConfigError, match=r"input.0.content.2: .* is not a text part"):
        load_grader(judge)
    with pytest.raises(ConfigError, match="reasoning_effort: 'max' is not allowed"):
        load_grader({**judge, "input": "x", "sampling_params": {"reasoning_effort": "max"}})


def test_a_grader_file_must_hold_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a grader must be a mapping with a type, got list"):
        load_grader(path)


def test_load_grader_reads_json_the_openai_wrapper_and_defaults_the_name(tmp_path):
    body = string_check()
    del body["name"]
    path = tmp_path / "exact.json"
    path.write_text(json.dumps({"grader": body}))
    grader = load_grader(path)
    assert (grader.type, grader.name) == ("string_check", "exact")  # the file's stem
    assert grader.grade("a", {"answer": "a"}).reward == 1.0


def test_load_grader_reports_missing_files_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_grader(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: string_check\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_grader(bad)


# ---------------------------------------------------------------- CLI and examples


@pytest.mark.parametrize("path", sorted(EXAMPLES.iterdir()), ids=lambda p: p.name)
def test_every_example_grader_validates(path, capsys):
    assert main(["grader", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    grader = load_grader(path)
    assert out.startswith(f"valid: {grader.type} grader {grader.name}\n")


def test_validate_lists_multi_sub_graders(capsys):
    assert main(["grader", "validate", str(EXAMPLES / "summary.yaml")]) == 0
    assert capsys.readouterr().out == (
        "valid: multi grader summary\n"
        "  string_check grader mentions\n"
        "  text_similarity grader rouge\n"
        "  python grader length\n"
    )


def test_summary_example_grades_a_demo_row():
    row = json.loads((EXAMPLES.parent / "demo" / "documents.jsonl").open().readline())
    answer = "House prices in Galdmore fell by 12 per cent in the year to October."
    with load_grader(EXAMPLES / "summary.yaml") as grader:
        result = grader.grade(answer, row)
    # mentions: facts[0] "Galdmore" is in the answer; length: 13 words < 50
    assert result.errors == []
    assert result.sub_rewards["mentions"] == 1.0 and result.sub_rewards["length"] == 1.0
    expected_rouge = rouge_l(answer, row["reference"])
    assert result.sub_rewards["rouge"] == pytest.approx(expected_rouge)
    assert result.reward == pytest.approx(0.5 + 0.5 * expected_rouge)


def test_cli_run_prints_one_json_object(tmp_path):
    item = tmp_path / "item.json"
    item.write_text(json.dumps({"reference": REFERENCE}))
    proc = run_cli(
        "grader",
        "run",
        str(EXAMPLES / "rouge_l.yaml"),
        "--sample",
        CANDIDATE,
        "--item-file",
        str(item),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"reward", "sub_rewards", "errors", "execution_time"}
    assert result["reward"] == pytest.approx(5 / 6) and result["errors"] == []


def test_cli_run_exits_0_with_recorded_errors_and_2_for_bad_item_json(capsys):
    grader = str(EXAMPLES / "rouge_l.yaml")
    assert main(["grader", "run", grader, "--sample", "x", "--item", "{}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reward"] == 0.0 and result["errors"][0]["kind"] == "invalid_variable"
    assert main(["grader", "run", grader, "--sample", "x", "--item", "[1"]) == 2
    assert "--item is not valid JSON" in capsys.readouterr().err
    assert main(["grader", "run", grader, "--sample", "x", "--item", "[1]"]) == 2
    assert "--item must be a JSON object" in capsys.readouterr().err


def test_cli_refuses_a_hostile_formula_without_a_traceback(tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text(
        "type: multi\nname: evil\ngraders:\n"
        "  a: {type: string_check, input: x, reference: x, operation: eq}\n"
        "calculate_output: \"__import__('os').system('echo pwned')\"\n"
    )
    for command in (["validate", str(path)], ["run", str(path), "--sample", "x"]):
        proc = run_cli("grader", *command)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stdout + proc.stderr
        assert "pwned" not in proc.stdout + proc.stderr
        assert "calculate_output: unknown function '__import__'" in proc.stderr
        assert "at column 1" in proc.stderr


def test_key_facts_example_grades_a_demo_row():
    row = json.loads((EXAMPLES.parent / "demo" / "documents.jsonl").open().readline())
    answer = f"In {row['facts'][0]}, something happened. " + "word " * 50
    with load_grader(EXAMPLES / "key_facts.yaml") as grader:
        result = grader.grade(answer, row)
        perfect = grader.grade(row["reference"], row)
    # one of the facts kept; 55 words, over the limit: minus 0.5
    share = 1 / len(row["facts"])
    assert result.errors == []
    assert result.sub_rewards["facts"] == pytest.approx(share)
    assert result.sub_rewards["within_limit"] == 0.0
    expected_rouge = rouge_l(answer, row["reference"])
    assert result.reward == pytest.approx(share + 0.5 * expected_rouge - 0.5)
    # the reference keeps every fact, matches itself and is short: 1 + 0.5
    assert perfect.reward == pytest.approx(1.5)


def test_brief_summary_length_factor_keeps_a_tenth_at_48_words_and_nothing_from_49():
    from rlhfkit.graders import load_grader

    item = {"facts": ["Crancombe"], "reference": "A cafe in Crancombe serves free lunches."}
    with load_grader(EXAMPLES / "brief_summary.yaml") as grader:
        factors = [
            grader.grade(" ".join(["word"] * n), item).sub_rewards["length"]
            for n in (0, 39, 40, 48, 49)
        ]
    assert factors == pytest.approx([0.0, 1.0, 0.9, 0.1, 0.0])


def test_summary_content_grades_the_share_of_facts_and_half_the_rouge_without_counting_words():
    item = {
        "facts": ["Crancombe", "Tuesday", "12 per cent"],
        "reference": "A cafe in Crancombe raised prices by 12 per cent on Tuesday.",
    }
    padded = "In CRANCOMBE, prices rose by 12 per cent. " + "word " * 60
    with load_grader(EXAMPLES / "summary_content.yaml") as grader:
        result = grader.grade(padded, item)
        perfect = grader.grade(item["reference"], item)
        empty = grader.grade("", item)
    # two of three facts, case-insensitive; no word limit, only ROUGE-L's precision
    assert result.errors == []
    assert result.sub_rewards["facts"] == pytest.approx(2 / 3)
    rouge = rouge_l(padded, item["reference"])
    assert 0 < rouge < 0.3
    assert result.reward == pytest.approx(0.5 * 2 / 3 + 0.5 * rouge)
    assert perfect.reward == pytest.approx(1.0)
    assert empty.reward == 0.0


def test_grader_run_item_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    item = tmp_path / "item.json"
    item.write_bytes(b'{"reference": "caf\xe9"}')
    proc = run_cli("grader", "run", str(EXAMPLES / "rouge_l.yaml"), "--sample", "x",
                   "--item-file", str(item))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--item-file {item} is not UTF-8 (byte 0xe9 at offset 18)" in proc.stderr
