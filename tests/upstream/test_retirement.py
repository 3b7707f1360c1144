"""Retirement: shutdown dates and job-creation cutoffs shown, enforced, and warned about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.settings import Settings
from tests.factories import make_file, make_tenant
from tests.upstream.conftest import provider_for, settle, sync_now, upstream_id

TODAY = datetime.now(UTC).date()
SOON = (TODAY + timedelta(days=10)).isoformat()
CLOSED = (TODAY - timedelta(days=1)).isoformat()
LATER = (TODAY + timedelta(days=400)).isoformat()


@pytest.fixture
def settings(settings: Settings, double) -> Settings:
    models = [
        {"id": "gpt-4o-mini", "shutdown_date": SOON, "training_cutoff": CLOSED},
        {"id": "gpt-4.1-mini", "shutdown_date": SOON, "training_cutoff": LATER},
    ]
    return settings.model_copy(update={"providers": [provider_for(double, models=models)]})


async def test_a_base_past_its_cutoff_is_refused_naming_the_date_and_the_alternatives(
    client, database
):
    tenant = await make_tenant(database)
    response = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": "gpt-4o-mini", "training_file": await make_file(client, tenant)},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("model_training_closed", "model")
    assert CLOSED in error["message"]
    assert "gpt-4.1-mini-2025-04-14" in error["message"]  # still open
    assert "gpt-4o-mini-2024-07-18" not in error["message"].split("here:")[1]


async def test_models_within_thirty_days_of_retirement_say_so(client, database):
    tenant = await make_tenant(database)
    models = {
        m["id"]: m for m in (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
    }
    closing = models["gpt-4.1-mini-2025-04-14"]
    assert closing["shutdown_date"] == SOON and closing["training_cutoff"] == LATER
    assert f"shuts down on {SOON}" in closing["warning"]
    assert CLOSED in models["gpt-4o-mini-2024-07-18"]["training_cutoff"]


async def test_jobs_on_a_retiring_base_get_a_warn_event_at_creation_and_while_running(
    client, database, double, upstream
):
    tenant = await make_tenant(database)
    created = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": "gpt-4.1-mini", "training_file": await make_file(client, tenant)},
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    await settle(upstream)
    remote = await upstream_id(database, job_id)
    await double.tick(remote)
    await double.tick(remote)  # running there
    await sync_now(upstream, database, job_id)
    await sync_now(upstream, database, job_id)  # told once
    events = (
        await client.get(
            f"/v1/fine_tuning/jobs/{job_id}/events", headers=tenant.headers, params={"limit": 100}
        )
    ).json()["data"]
    warnings = [e["message"] for e in events if e["level"] == "warn"]
    assert len(warnings) == 2
    assert all(f"{SOON}" in w for w in warnings)
    assert all("re-train it on an open-weight model" in w for w in warnings)
