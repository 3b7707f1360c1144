"""Webhooks from a provider: the Standard Webhooks signature is checked with the provider's
secret; bad, stale and replayed deliveries are refused; a good one syncs its job at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.settings import Settings
from tests.events.conftest import live_server  # noqa: F401  (the app served on a port)
from tests.factories import make_job, make_tenant
from tests.upstream.conftest import PROVIDER, WEBHOOK_SECRET, settle, upstream_id

HOOK = f"/v1/webhooks/{PROVIDER}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Passes every hour at most: only a webhook can bring the job's news sooner.
    slow = dict.fromkeys(["upstream_sync_running_seconds", "upstream_sync_queued_seconds"], 3600.0)
    return settings.model_copy(update=slow)


async def _finished_upstream(client, database, double, upstream) -> tuple[dict, str]:
    tenant = await make_tenant(database)
    created = await make_job(client, tenant, model="gpt-4o-mini")
    await settle(upstream)  # created there
    remote = await upstream_id(database, created["id"])
    assert remote is not None
    await double.run_to_end(remote)
    await settle(upstream)  # not due yet: nothing happens
    job = await client.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=tenant.headers)
    assert job.json()["status"] == "queued"
    return {"tenant": tenant, "job": created}, remote


async def test_a_signed_webhook_syncs_its_job_at_once(client, database, double, upstream):
    made, remote = await _finished_upstream(client, database, double, upstream)
    body, headers = double.signed_delivery(remote, "fine_tuning.job.succeeded")
    response = await client.post(HOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text
    await upstream.sync.drain()
    job = await client.get(
        f"/v1/fine_tuning/jobs/{made['job']['id']}", headers=made["tenant"].headers
    )
    assert job.json()["status"] == "succeeded"
    assert job.json()["fine_tuned_model"] == double.jobs[remote].body["fine_tuned_model"]

    # The same delivery again is a replay.
    again = await client.post(HOOK, content=body, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "webhook_replayed"


@pytest.mark.parametrize(
    "forgery",
    ["wrong secret", "tampered body", "stale", "from the future", "no signature"],
)
async def test_bad_and_stale_deliveries_are_refused(client, database, double, upstream, forgery):
    made, remote = await _finished_upstream(client, database, double, upstream)
    options = {}
    if forgery == "wrong secret":
        options["secret"] = "whsec_" + "b3RoZXItc2VjcmV0LW9mLWFuLWF0dGFja2Vy"
    elif forgery == "stale":
        options["timestamp"] = datetime.now(UTC) - timedelta(minutes=6)
    elif forgery == "from the future":
        options["timestamp"] = datetime.now(UTC) + timedelta(minutes=6)
    body, headers = double.signed_delivery(remote, "fine_tuning.job.succeeded", **options)
    if forgery == "tampered body":
        body = body.replace("succeeded", "cancelled")
    if forgery == "no signature":
        del headers["webhook-signature"]
    response = await client.post(HOOK, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook_signature"
    assert WEBHOOK_SECRET not in response.text
    await upstream.sync.drain()
    job = await client.get(
        f"/v1/fine_tuning/jobs/{made['job']['id']}", headers=made["tenant"].headers
    )
    assert job.json()["status"] == "queued"  # nothing was synced


async def test_unknown_providers_and_providers_without_a_secret_take_no_webhooks(client, double):
    body, headers = double.signed_delivery("ftjob-x", "fine_tuning.job.succeeded")
    assert (
        await client.post("/v1/webhooks/nobody", content=body, headers=headers)
    ).status_code == 404
    # The fake engine runs jobs too, but takes no webhooks.
    refused = await client.post("/v1/webhooks/local", content=body, headers=headers)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "webhook_not_found"


async def test_a_webhook_for_a_job_we_did_not_create_is_accepted_and_ignored(client, double):
    body, headers = double.signed_delivery("ftjob-elsewhere", "fine_tuning.job.failed")
    response = await client.post(HOOK, content=body, headers=headers)
    assert response.status_code == 200


async def test_the_provider_sends_its_webhook_over_http_and_the_job_syncs_at_once(
    client,
    database,
    double,
    upstream,
    live_server,  # noqa: F811
):
    double.webhook_url = f"http://127.0.0.1:{live_server.config.port}{HOOK}"
    tenant = await make_tenant(database)
    created = await make_job(client, tenant, model="gpt-4o-mini")
    await settle(upstream)
    remote = await upstream_id(database, created["id"])
    await double.run_to_end(remote)  # the double delivers its signed webhook as it finishes
    (sent,) = double.webhooks_sent
    assert (sent["type"], sent["job"], sent["status"]) == ("fine_tuning.job.succeeded", remote, 200)
    await upstream.sync.drain()
    job = await client.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=tenant.headers)
    assert job.json()["status"] == "succeeded"
