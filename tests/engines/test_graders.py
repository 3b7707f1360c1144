"""Graders run locally as rewards: templates, each grader type, formulas, offline limits."""

from __future__ import annotations

import pytest

from service.engines.local.graders import check_supported, evaluate, grade, render, similarity
from service.errors import InvalidRequest

ITEM = {"reference_answer": "Merci pour votre commande", "meta": {"lang": "fr"}}


def check(operation: str, reference: str = "{{item.reference_answer}}") -> dict:
    return {
        "type": "string_check",
        "name": "c",
        "input": "{{ sample.output_text }}",
        "reference": reference,
        "operation": operation,
    }


def test_templates_read_the_sample_and_nested_item_fields():
    assert (
        render(
            "{{sample.output_text}}/{{ item.meta.lang }}/{{item.missing}}",
            {"output_text": "ok"},
            ITEM,
        )
        == "ok/fr/"
    )
    assert render("{{ item.meta }}", {}, ITEM) == '{"lang": "fr"}'


@pytest.mark.parametrize(
    ("operation", "answer", "expected"),
    [
        ("eq", "Merci pour votre commande", 1.0),
        ("eq", "merci pour votre commande", 0.0),
        ("ne", "Autre chose", 1.0),
        ("like", "Bonjour. Merci pour votre commande !", 1.0),
        ("ilike", "MERCI POUR VOTRE COMMANDE", 1.0),
        ("like", "MERCI POUR VOTRE COMMANDE", 0.0),
    ],
)
def test_string_check(operation, answer, expected):
    assert grade(check(operation), answer, ITEM, None) == expected


@pytest.mark.parametrize(
    "metric", ["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_5", "rouge_l"]
)
def test_similarity_metrics_range_from_disjoint_to_identical(metric):
    text = "merci pour votre commande de douze chaises livrées sous huit jours"
    assert similarity(metric, text, text) == pytest.approx(1.0)
    assert similarity(metric, "zzz yyy xxx", text) < 0.2
    partial = similarity(metric, "merci pour votre commande de douze", text)
    assert 0.0 < partial < 1.0


def test_score_model_is_answered_by_a_model_and_scaled_to_its_range():
    grader = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-model",
        "range": [0, 10],
        "input": [{"role": "user", "content": "Rate: {{sample.output_text}}"}],
    }
    asked = []

    def answering(model, messages):
        asked.append((model, messages))
        return "I give it 7 out of 10"

    assert grade(grader, "Bonjour", ITEM, answering) == pytest.approx(0.7)
    assert asked == [("judge-model", [{"role": "user", "content": "Rate: Bonjour"}])]
    assert grade(grader, "Bonjour", ITEM, lambda model, messages: "no idea") == 0.0


def test_multi_combines_sub_grades_with_its_formula():
    grader = {
        "type": "multi",
        "name": "m",
        "calculate_output": "0.25 * exact + 0.75 * close",
        "graders": {
            "exact": check("eq"),
            "close": {
                "type": "text_similarity",
                "name": "close",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference_answer}}",
                "evaluation_metric": "fuzzy_match",
            },
        },
    }
    assert grade(grader, "Merci pour votre commande", ITEM, None) == pytest.approx(1.0)
    assert 0.0 < grade(grader, "Merci pour la commande", ITEM, None) < 0.75


@pytest.mark.parametrize(
    "formula", ["__import__('os').system('true')", "exact.__class__", "[1, 2]", "open('x')"]
)
def test_formulas_are_arithmetic_only(formula):
    with pytest.raises(ValueError):
        evaluate(formula, {"exact": 1.0})


def test_formula_functions_and_division_by_zero():
    assert evaluate("max(a, b) - min(a, b) + abs(-1)", {"a": 0.2, "b": 0.7}) == pytest.approx(1.5)
    assert evaluate("a / 0", {"a": 1.0}) == 0.0


@pytest.mark.parametrize(
    "grader",
    [
        {"type": "python", "name": "p", "source": "def grade(s, i): return 1"},
        {
            "type": "text_similarity",
            "name": "t",
            "input": "x",
            "reference": "y",
            "evaluation_metric": "cosine",
        },
        {
            "type": "multi",
            "name": "m",
            "calculate_output": "p",
            "graders": {
                "p": {"type": "python", "name": "p", "source": "def grade(s, i): return 1"}
            },
        },
    ],
)
def test_graders_that_cannot_run_offline_are_refused(grader):
    with pytest.raises(InvalidRequest) as refused:
        check_supported(grader)
    assert refused.value.code == "unsupported_grader"


def test_every_metric_offered_offline_is_computed():
    """OFFLINE_METRICS follows the jobs schema: a metric added there must be implemented here
    (or listed as needing resources), or jobs would be accepted and then fail in training."""
    from service.engines.local.graders import OFFLINE_METRICS, similarity

    text = "Bonjour Madame Durand, merci pour votre commande de douze chaises de bureau."
    for metric in sorted(OFFLINE_METRICS):
        assert similarity(metric, text, text) == pytest.approx(1.0), metric
