"""Deliveries of a job's final status: OpenAI's payload, signed so the SDK's `unwrap` accepts
it, retried with backoff until a 2xx, given up after the window, and never sent inside."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.webhooks import (
    FineTuningJobCancelledWebhookEvent,
    FineTuningJobFailedWebhookEvent,
    FineTuningJobSucceededWebhookEvent,
)
from sqlalchemy import update
from sqlmodel import col

from service.ids import now
from service.janitor import WEBHOOK_HISTORY_SECONDS, sweep
from service.webhooks import targets
from service.webhooks.dispatcher import Attempt
from service.webhooks.models import WebhookMessage
from tests.factories import Tenant, make_job, make_tenant
from tests.fake_engine import claim_next
from tests.schema.openai import assert_openai
from tests.webhooks.receiver import Received, receiver
from tests.webhooks.test_endpoints import create_endpoint

SDK = openai.OpenAI(api_key="unused")  # only its `webhooks.unwrap`, which makes no request


def unwrap(received: Received, secret: str) -> Any:
    """Verify and parse a delivery exactly as a receiver using the SDK does."""
    return SDK.webhooks.unwrap(received.body, received.headers, secret=secret)


async def cancel(client: httpx.AsyncClient, tenant: Tenant, job_id: str) -> None:
    response = await client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=tenant.headers)
    assert response.status_code == 200, response.text


async def deliveries(client: httpx.AsyncClient, tenant: Tenant, endpoint_id: str) -> list[Any]:
    response = await client.get(
        f"/v1/webhook_endpoints/{endpoint_id}/deliveries", headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    data: list[Any] = response.json()["data"]
    return data


async def settled(client, tenant, endpoint_id, timeout: float = 20.0) -> list[Any]:
    """The endpoint's deliveries once none is pending any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await deliveries(client, tenant, endpoint_id)
        if listed and all(d["status"] != "pending" for d in listed):
            return listed
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries still pending: {listed}")


async def test_a_failing_receiver_gets_retries_then_exactly_one_accepted_delivery(client, database):
    tenant = await make_tenant(database)
    # 500, a redirect (a failure, as at OpenAI) and a timeout-like 503, then 200.
    with receiver(statuses=[500, 302, 503]) as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        job = await make_job(client, tenant)
        await cancel(client, tenant, job["id"])
        received = await hooks.until(4)
        [delivery] = await settled(client, tenant, endpoint["id"])
        await asyncio.sleep(0.3)
        assert len(hooks.received) == 4  # nothing more after the 200

    assert [r.status for r in received] == [500, 302, 503, 200]
    assert len(hooks.accepted()) == 1
    # One message: the same id on every attempt, each signed afresh and accepted by the SDK.
    assert len({r.headers["webhook-id"] for r in received}) == 1
    events = [unwrap(r, endpoint["signing_secret"]) for r in received]
    assert all(isinstance(e, FineTuningJobCancelledWebhookEvent) for e in events)
    event = events[-1]
    assert event.data.id == job["id"] and event.object == "event"
    assert event.id.startswith("evt_")
    assert_openai("WebhookFineTuningJobCancelled", json.loads(received[-1].body))
    assert json.loads(received[-1].body) == {
        "id": event.id,
        "object": "event",
        "created_at": event.created_at,
        "type": "fine_tuning.job.cancelled",
        "data": {"id": job["id"]},
    }
    assert delivery["id"] == received[0].headers["webhook-id"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "delivered",
        4,
        200,
    )
    assert delivery["event_id"] == event.id and delivery["next_attempt_at"] is None


async def test_success_and_failure_are_sent_to_the_endpoints_that_take_them(client, database):
    tenant = await make_tenant(database)
    with receiver() as everything, receiver() as successes:
        all_events = await create_endpoint(client, tenant, everything.url)
        only_success = await create_endpoint(
            client, tenant, successes.url, event_types=["fine_tuning.job.succeeded"]
        )
        winner = await make_job(client, tenant)
        loser = await make_job(client, tenant)
        run = await claim_next(database)
        await run.start()
        await run.succeed()
        run = await claim_next(database)
        await run.start()
        await run.fail()
        got = await everything.until(2)
        one = await successes.until(1)
        await asyncio.sleep(0.3)
        assert len(successes.received) == 1

    by_job = {}
    for r in got:
        event = unwrap(r, all_events["signing_secret"])
        by_job[event.data.id] = type(event)
        # OpenAI's published schema of the payload, as well as the SDK's type.
        name = {"fine_tuning.job.succeeded": "Succeeded", "fine_tuning.job.failed": "Failed"}
        assert_openai(f"WebhookFineTuningJob{name[event.type]}", json.loads(r.body))
    assert by_job == {
        winner["id"]: FineTuningJobSucceededWebhookEvent,
        loser["id"]: FineTuningJobFailedWebhookEvent,
    }
    assert unwrap(one[0], only_success["signing_secret"]).data.id == winner["id"]
    # One event, two endpoints: the same event id, a message id each.
    [to_all] = [r for r in got if json.loads(r.body)["data"]["id"] == winner["id"]]
    assert json.loads(to_all.body)["id"] == json.loads(one[0].body)["id"]
    assert to_all.headers["webhook-id"] != one[0].headers["webhook-id"]


async def test_a_delivery_is_given_up_after_the_retry_window(client, database, settings):
    settings.webhook_retry_window_seconds = 1.5  # counted from the event, in whole seconds
    tenant = await make_tenant(database)
    with receiver(statuses=[500] * 100) as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        job = await make_job(client, tenant)
        await cancel(client, tenant, job["id"])
        [delivery] = await settled(client, tenant, endpoint["id"])
        count = len(hooks.received)
        await asyncio.sleep(0.5)
        assert len(hooks.received) == count  # no attempt after giving up
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    assert delivery["attempts"] == count >= 2
    assert "answered 500" in delivery["last_error"]


async def test_rotation_can_keep_the_old_secret_signing_for_a_day(client, database):
    tenant = await make_tenant(database)
    with receiver() as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        old = endpoint["signing_secret"]
        path = f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret"
        kept = await client.post(
            path, headers=tenant.headers, json={"keep_old_secret_active_for_24_hours": True}
        )
        new = kept.json()["signing_secret"]
        await cancel(client, tenant, (await make_job(client, tenant))["id"])
        [both] = await hooks.until(1)
        assert unwrap(both, old).type == unwrap(both, new).type == "fine_tuning.job.cancelled"

        newest = (await client.post(path, headers=tenant.headers)).json()["signing_secret"]
        await cancel(client, tenant, (await make_job(client, tenant))["id"])
        _, only_new = await hooks.until(2)
    assert unwrap(only_new, newest).type == "fine_tuning.job.cancelled"
    for stale in (old, new):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(only_new, stale)


async def test_the_address_is_checked_again_at_delivery(client, database, settings, monkeypatch):
    """DNS rebinding: the name was public at creation and points inside at delivery time."""
    settings.webhooks_allow_private = False
    answers = {"hooks.example.com": [targets.ipaddress.ip_address("93.184.215.14")]}

    async def lookup(host: str, port: int) -> list[targets.IPAddress]:
        return answers[host]

    monkeypatch.setattr(targets, "lookup", lookup)
    tenant = await make_tenant(database)
    with receiver() as hooks:
        endpoint = await create_endpoint(client, tenant, "https://hooks.example.com/h")
        answers["hooks.example.com"] = [targets.ipaddress.ip_address("127.0.0.1")]
        await cancel(client, tenant, (await make_job(client, tenant))["id"])
        deadline = time.monotonic() + 10
        while (listed := await deliveries(client, tenant, endpoint["id"]))[0]["attempts"] < 2:
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.05)
        assert hooks.received == []
    [delivery] = listed
    assert delivery["status"] == "pending" and delivery["last_status_code"] is None
    assert "resolves to an address that is not public" in delivery["last_error"]
    assert "127.0.0.1" not in delivery["last_error"]  # internal addresses are not revealed


async def test_a_deleted_endpoint_receives_nothing_more(client, database):
    tenant = await make_tenant(database)
    with receiver(statuses=[500] * 100) as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        await cancel(client, tenant, (await make_job(client, tenant))["id"])
        await hooks.until(1)
        deleted = await client.delete(
            f"/v1/webhook_endpoints/{endpoint['id']}", headers=tenant.headers
        )
        assert deleted.status_code == 200
        count = len(hooks.received)
        await asyncio.sleep(0.5)
        assert len(hooks.received) <= count + 1  # at most the attempt already under way


async def test_a_named_host_is_reached_at_its_checked_address_with_its_name(client, database):
    tenant = await make_tenant(database)
    with receiver() as hooks:
        url = hooks.url.replace("127.0.0.1", "localhost")
        await create_endpoint(client, tenant, url)
        await cancel(client, tenant, (await make_job(client, tenant))["id"])
        [got] = await hooks.until(1)
    assert got.headers["host"] == url.split("/")[2]
    assert got.headers["content-type"] == "application/json"


async def test_finished_deliveries_are_pruned_after_30_days(client, database, settings):
    tenant = await make_tenant(database)
    with receiver() as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        for _ in range(2):
            await cancel(client, tenant, (await make_job(client, tenant))["id"])
        await hooks.until(2)
        await settled(client, tenant, endpoint["id"])
    recent, old = await deliveries(client, tenant, endpoint["id"])  # newest first
    async with database.session() as session:
        await session.exec(
            update(WebhookMessage)
            .where(col(WebhookMessage.id) == old["id"])
            .values(created_at=now() - WEBHOOK_HISTORY_SECONDS - 1)
        )
        await session.commit()
    result = await sweep(database=database, files_dir=settings.files_dir, idempotency_ttl=3600)
    assert result.webhook_messages == 1
    assert [d["id"] for d in await deliveries(client, tenant, endpoint["id"])] == [recent["id"]]


async def test_a_claim_taken_over_after_it_ran_out_is_recorded_once(app, client, database):
    """Two senders (two processes, say): the one whose claim ran out records nothing, so a
    late failure can never reopen a delivery the other one completed."""
    dispatcher = app.state.webhooks
    dispatcher.stop()  # this test plays the senders itself
    tenant = await make_tenant(database)
    with receiver() as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        await cancel(client, tenant, (await make_job(client, tenant))["id"])
        [(message, row, first)] = await dispatcher._claim(busy=set(), slots=1)
        async with database.session() as session:  # the first claim runs out
            await session.exec(
                update(WebhookMessage)
                .where(col(WebhookMessage.id) == message.id)
                .values(claimed_until=time.time() - 1)
            )
            await session.commit()
        [(again, _, second)] = await dispatcher._claim(busy=set(), slots=1)
        assert again.id == message.id and second != first
        await dispatcher._deliver(again, row, second)  # delivered by the second sender
        late = Attempt(status_code=500, error="late failure")
        await dispatcher._record(message, late, retry=True, token=first)
        assert len(hooks.received) == 1
    [delivery] = await deliveries(client, tenant, endpoint["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)
