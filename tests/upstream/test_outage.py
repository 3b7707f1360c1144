"""A provider that stops answering: the job stays as it is with one `warn` event, the key never
shows, and the sync picks up where it was once the provider answers again."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.factories import make_job, make_tenant
from tests.upstream.conftest import mirrored_events, settle, sync_now, upstream_id


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"upstream_max_retries": 1})


async def test_an_outage_warns_once_and_the_sync_resumes(client, database, double, upstream):
    tenant = await make_tenant(database)
    created = await make_job(client, tenant, model="gpt-4o-mini")
    await settle(upstream)
    remote = await upstream_id(database, created["id"])
    await double.tick(remote)

    double.faults.rate, double.faults.kinds = 1.0, ("500",)
    for _ in range(3):
        await sync_now(upstream, database, created["id"])
    job = (await client.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=tenant.headers)).json()
    assert job["status"] == "queued"
    events = (
        await client.get(f"/v1/fine_tuning/jobs/{created['id']}/events", headers=tenant.headers)
    ).json()["data"]
    warnings = [e for e in events if e["level"] == "warn"]
    assert len(warnings) == 1
    assert warnings[0]["message"].startswith("Provider openai did not answer (500")
    assert double.api_key not in str(events)

    double.faults.rate = 0.0
    await double.run_to_end(remote)
    await sync_now(upstream, database, created["id"])
    job = (await client.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded"
    messages = [
        e["message"]
        for e in (
            await client.get(
                f"/v1/fine_tuning/jobs/{created['id']}/events",
                headers=tenant.headers,
                params={"limit": 100},
            )
        ).json()["data"]
    ]
    assert messages.count("Provider openai answers again; the job is synced.") == 1
    expected = [(e["id"], e["message"]) for e in double.jobs[remote].events]
    assert await mirrored_events(database, created["id"]) == expected


async def test_a_job_gone_at_the_provider_fails_here_with_a_clear_error(
    client, database, double, upstream
):
    tenant = await make_tenant(database)
    created = await make_job(client, tenant, model="gpt-4o-mini")
    await settle(upstream)
    double.jobs.pop(await upstream_id(database, created["id"]))
    await sync_now(upstream, database, created["id"])
    job = (await client.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=tenant.headers)).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "upstream_job_not_found"
    assert job["error"]["message"].startswith("404 ")
