"""Cost: estimates as ranges from the pricing file, budgets that refuse jobs, actual cost."""

from __future__ import annotations

import pytest

from service.models import pricing
from tests.factories import assert_envelope, chat_file, make_file, make_tenant
from tests.fake_engine import run_to_success

JOBS = "/v1/fine_tuning/jobs"


def test_the_pricing_file_names_sources_and_dates_for_every_price():
    data = pricing.pricing()
    assert data["as_of"] and data["token_margin"]["low"] < 1 < data["token_margin"]["high"]
    for model, entry in data["models"].items():
        assert entry["training_per_million"] > 0 and entry["sources"] and entry["read_on"], model
    assert data["local"]["source"].startswith("bench/")


def test_estimates_are_ranges():
    cost = pricing.cost_range(1_000_000, 3.0)
    assert cost.low < 3.0 < cost.high
    small, large = (
        pricing.compute_seconds(10_000, 135_000_000),
        pricing.compute_seconds(10_000, 1_350_000_000),
    )
    assert small.low < small.high and large.low == pytest.approx(small.low * 10, rel=0.01)
    local = pricing.estimate(50_000, price_per_million=None, parameters=135_000_000)
    assert local["cost_usd"] is None and local["compute_seconds"]["high"] > 0


async def test_a_job_over_the_budget_is_refused_and_one_under_it_records_its_cost(client, database):
    tenant = await make_tenant(database)
    admin = await make_tenant(database, admin=True)  # an admin key of the same project
    file_id = await make_file(client, tenant, chat_file(12))

    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": file_id},
    )
    job = created.json()
    cost = job["estimate"]["cost_usd"]
    assert 0 < cost["low"] < cost["high"] and job["estimate"]["compute_seconds"] is None
    assert job["cost_usd"] is None
    settings = (await client.get("/v1/email/settings", headers=tenant.headers)).json()
    assert settings["budget_usd"] is None and settings["spent_usd"] == pytest.approx(cost["high"])

    # A project key cannot raise its own budget; an admin key can.
    forbidden = await client.post(
        "/v1/email/settings", headers=tenant.headers, json={"budget_usd": 100}
    )
    assert_envelope(forbidden, 403)
    budget = cost["high"] * 1.5  # room for this job, not for a second one
    changed = await client.post(
        "/v1/email/settings", headers=admin.headers, json={"budget_usd": budget}
    )
    assert changed.status_code == 200 and changed.json()["budget_usd"] == budget

    refused = await client.post(
        JOBS,
        headers=tenant.headers,
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": file_id},
    )
    error = assert_envelope(refused, 400)
    assert error["code"] == "budget_exceeded" and f"{budget:.2f}" in error["message"]
    assert len((await client.get(JOBS, headers=tenant.headers)).json()["data"]) == 1

    await run_to_success(database)
    finished = (await client.get(f"{JOBS}/{job['id']}", headers=tenant.headers)).json()
    assert finished["cost_usd"] == pytest.approx(finished["trained_tokens"] / 1e6 * 3.0)
    settings = (await client.get("/v1/email/settings", headers=tenant.headers)).json()
    assert settings["spent_usd"] == pytest.approx(finished["cost_usd"])

    lifted = await client.post(
        "/v1/email/settings", headers=admin.headers, json={"budget_usd": None}
    )
    assert lifted.json()["budget_usd"] is None
    again = await client.post(
        JOBS,
        headers=tenant.headers,
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": file_id},
    )
    assert again.status_code == 200
