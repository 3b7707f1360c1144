"""/v1/fine_tuning/alpha/graders: validate and run each grader the service supports, and
refuse those it cannot run, as job creation does."""

from __future__ import annotations

import pytest

from tests.factories import assert_envelope, make_tenant

GRADERS = "/v1/fine_tuning/alpha/graders"
BASE = "gpt-4o-mini-2024-07-18"  # answered by the test engine, which echoes the last message

EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "eq",
}
SIMILAR = {
    "type": "text_similarity",
    "name": "similar",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "evaluation_metric": "rouge_l",
}
SCORED = {
    "type": "score_model",
    "name": "judge",
    "model": BASE,
    "input": [{"role": "user", "content": "Score {{ sample.output_text }}: 0.8"}],
}


@pytest.mark.parametrize(
    ("grader", "sample", "reward"),
    [
        (EXACT, "Paris", 1.0),
        (EXACT, "Lyon", 0.0),
        ({**EXACT, "operation": "ilike", "reference": "paris"}, "It is PARIS.", 1.0),
        (SIMILAR, "the capital is Paris", 0.4),  # F1 of precision 1/4 and recall 1
        (SCORED, "Paris", 0.8),  # the echoed prompt's first number
    ],
)
async def test_run_each_supported_grader(client, database, grader, sample, reward):
    tenant = await make_tenant(database)
    response = await client.post(
        f"{GRADERS}/run",
        headers=tenant.headers,
        json={"grader": grader, "model_sample": sample, "item": {"answer": "Paris"}},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["reward"] == pytest.approx(reward)
    assert result["metadata"]["name"] == grader["name"]
    assert result["metadata"]["type"] == grader["type"]
    assert not any(v for v in result["metadata"]["errors"].values())
    if grader["type"] == "score_model":
        assert result["model_grader_token_usage_per_model"][BASE]["total_tokens"] > 0


async def test_multi_grader_scores_and_formula(client, database):
    tenant = await make_tenant(database)
    multi = {
        "type": "multi",
        "name": "both",
        "graders": {"exact": EXACT, "similar": SIMILAR},
        "calculate_output": "0.5 * exact + 0.5 * similar",
    }
    body = {"grader": multi, "model_sample": "Paris", "item": {"answer": "Paris"}}
    result = (await client.post(f"{GRADERS}/run", headers=tenant.headers, json=body)).json()
    assert result["reward"] == 1.0 and result["sub_rewards"] == {"exact": 1.0, "similar": 1.0}
    assert result["metadata"]["scores"] == result["sub_rewards"]

    body["grader"] = {**multi, "calculate_output": "exact +"}
    broken = (await client.post(f"{GRADERS}/run", headers=tenant.headers, json=body)).json()
    assert broken["reward"] == 0.0 and broken["metadata"]["errors"]["formula_parse_error"]


async def test_a_scoring_model_that_does_not_exist_is_reported_not_raised(client, database):
    tenant = await make_tenant(database)
    body = {"grader": {**SCORED, "model": "no-such-model"}, "model_sample": "x"}
    result = (await client.post(f"{GRADERS}/run", headers=tenant.headers, json=body)).json()
    errors = result["metadata"]["errors"]
    assert result["reward"] == 0.0 and errors["model_grader_server_error"]
    assert "no-such-model" in errors["model_grader_server_error_details"]


async def test_validate_echoes_a_supported_grader(client, database):
    tenant = await make_tenant(database)
    for grader in (EXACT, SIMILAR, SCORED):
        response = await client.post(
            f"{GRADERS}/validate", headers=tenant.headers, json={"grader": grader}
        )
        assert response.status_code == 200 and response.json() == {"grader": grader}


@pytest.mark.parametrize(
    ("grader", "param"),
    [
        ({"type": "python", "name": "py", "source": "def grade(s, i): return 1"}, "grader"),
        ({**SIMILAR, "evaluation_metric": "cosine"}, "grader.evaluation_metric"),
        ({**EXACT, "operation": "regex"}, None),  # not a grader at all
    ],
)
@pytest.mark.parametrize("route", ["validate", "run"])
async def test_unsupported_graders_are_refused_as_at_job_creation(
    client, database, grader, param, route
):
    tenant = await make_tenant(database)
    response = await client.post(
        f"{GRADERS}/{route}",
        headers=tenant.headers,
        json={"grader": grader, "model_sample": "x"} if route == "run" else {"grader": grader},
    )
    error = assert_envelope(response, 400)
    if param is not None:
        assert error["param"] == param and error["code"] == "unsupported_grader"
    else:
        assert error["param"].startswith("grader")
