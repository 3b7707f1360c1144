"""Webhook endpoints through the API, in OpenAI's shapes: create, list, retrieve, update,
rotate, test, delete; deliveries listed; other projects' endpoints invisible; bad input refused."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from openai.types.webhooks import (
    DeletedWebhookEndpoint,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookEndpointTestResult,
    WebhookEndpointWithSecret,
    WebhookEventTypeList,
)
from sqlmodel import select

from service.idempotency import IdempotencyRecord
from tests.factories import Tenant, assert_envelope, make_tenant
from tests.webhooks.receiver import receiver

ALL_TYPES = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


async def create_endpoint(
    client: httpx.AsyncClient, tenant: Tenant, url: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": "mail back end", "url": url, "event_types": ALL_TYPES, **fields}
    response = await client.post("/v1/webhook_endpoints", headers=tenant.headers, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_endpoint_lifecycle_in_openai_shapes(client, database):
    tenant = await make_tenant(database)
    with receiver() as hooks:
        created = WebhookEndpointWithSecret.model_validate(
            await create_endpoint(client, tenant, hooks.url)
        )
        assert created.id.startswith("we_") and created.object == "webhook_endpoint"
        assert created.signing_secret.startswith("whsec_")
        assert created.signing_secret_hint == f"whsec_…{created.signing_secret[-4:]}"
        assert created.updated_at == created.created_at

        got = await client.get(f"/v1/webhook_endpoints/{created.id}", headers=tenant.headers)
        shown = WebhookEndpoint.model_validate(got.json())
        assert "signing_secret" not in got.json()  # shown once, at creation
        assert shown.url == hooks.url and shown.event_types == ALL_TYPES

        second = await create_endpoint(client, tenant, hooks.url, name="second")
        page = await client.get("/v1/webhook_endpoints", headers=tenant.headers)
        listed = WebhookEndpointList.model_validate(page.json())
        assert [e.id for e in listed.data] == [second["id"], created.id]  # newest first
        first_page = await client.get("/v1/webhook_endpoints?limit=1", headers=tenant.headers)
        assert first_page.json()["has_more"] is True

        unchanged = await client.post(
            f"/v1/webhook_endpoints/{created.id}",
            headers=tenant.headers,
            json={"name": created.name},
        )
        assert unchanged.json()["updated_at"] == created.updated_at  # nothing changed
        renamed = await client.post(
            f"/v1/webhook_endpoints/{created.id}",
            headers=tenant.headers,
            json={"name": "renamed", "event_types": ["fine_tuning.job.succeeded"]},
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "renamed"
        assert renamed.json()["event_types"] == ["fine_tuning.job.succeeded"]

        rotated = await client.post(
            f"/v1/webhook_endpoints/{created.id}/rotate_secret", headers=tenant.headers, json={}
        )
        new = WebhookEndpointWithSecret.model_validate(rotated.json())
        assert new.signing_secret != created.signing_secret

        types = await client.get("/v1/webhook_event_types", headers=tenant.headers)
        assert WebhookEventTypeList.model_validate(types.json()).data == ALL_TYPES

        deleted = await client.delete(f"/v1/webhook_endpoints/{created.id}", headers=tenant.headers)
        assert DeletedWebhookEndpoint.model_validate(deleted.json()).deleted is True
        gone = await client.get(f"/v1/webhook_endpoints/{created.id}", headers=tenant.headers)
        assert assert_envelope(gone, 404)["code"] == "webhook_endpoint_not_found"


async def test_test_delivery_answers_the_endpoints_status_and_is_listed(client, database):
    tenant = await make_tenant(database)
    with receiver(statuses=[204, 500]) as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
        results = []
        for _ in range(2):
            response = await client.post(
                f"/v1/webhook_endpoints/{endpoint['id']}/test",
                headers=tenant.headers,
                json={"event_type": "fine_tuning.job.succeeded"},
            )
            assert response.status_code == 200, response.text
            results.append(WebhookEndpointTestResult.model_validate(response.json()))
        assert [r.status_code for r in results] == [204, 500]
        assert all(r.success and r.webhook_endpoint_id == endpoint["id"] for r in results)
        assert len(hooks.received) == 2  # a test is never retried

    deliveries = await client.get(
        f"/v1/webhook_endpoints/{endpoint['id']}/deliveries", headers=tenant.headers
    )
    listed = deliveries.json()["data"]
    assert [(d["status"], d["last_status_code"], d["test"]) for d in listed] == [
        ("failed", 500, True),
        ("delivered", 204, True),
    ]
    failed = await client.get(
        f"/v1/webhook_endpoints/{endpoint['id']}/deliveries?status=failed", headers=tenant.headers
    )
    assert [d["id"] for d in failed.json()["data"]] == [listed[0]["id"]]

    # The receiver is gone: no answer at all is a clear 400, not a 5xx.
    unreachable = await client.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/test",
        headers=tenant.headers,
        json={"event_type": "fine_tuning.job.failed"},
    )
    error = assert_envelope(unreachable, 400)
    assert error["code"] == "webhook_endpoint_unreachable"
    assert "could not be reached" in error["message"]


async def test_other_projects_endpoints_are_invisible(client, database):
    owner = await make_tenant(database)
    other = await make_tenant(database, "other")
    with receiver() as hooks:
        endpoint = await create_endpoint(client, owner, hooks.url)
        base = f"/v1/webhook_endpoints/{endpoint['id']}"
        for method, path, body in [
            ("GET", base, None),
            ("POST", base, {"name": "mine now"}),
            ("DELETE", base, None),
            ("POST", f"{base}/rotate_secret", {}),
            ("POST", f"{base}/test", {"event_type": "fine_tuning.job.succeeded"}),
            ("GET", f"{base}/deliveries", None),
        ]:
            response = await client.request(method, path, headers=other.headers, json=body)
            assert assert_envelope(response, 404)["code"] == "webhook_endpoint_not_found"
        listed = await client.get("/v1/webhook_endpoints", headers=other.headers)
        assert listed.json()["data"] == []
        assert hooks.received == []  # the other project's test sent nothing


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"name": "x", "url": "https://example.com/h", "event_types": ["batch.completed"]},
            "event_types",
        ),
        ({"name": "x", "url": "https://example.com/h", "event_types": []}, "event_types"),
        ({"name": "", "url": "https://example.com/h", "event_types": ALL_TYPES}, "name"),
        ({"name": "x", "event_types": ALL_TYPES}, "url"),
        ({"name": "x", "url": "not a url", "event_types": ALL_TYPES}, "url"),
        ({"name": "x", "url": "ftp://example.com/h", "event_types": ALL_TYPES}, "url"),
        ({"name": "x", "url": "https://u:p@example.com/h", "event_types": ALL_TYPES}, "url"),
        (
            {"name": "x", "url": "https://example.com/" + "a" * 2100, "event_types": ALL_TYPES},
            "url",
        ),
        (
            {"name": "x", "url": "https://example.com/h", "event_types": ALL_TYPES, "secret": "s"},
            "secret",
        ),
    ],
)
async def test_bad_endpoints_are_refused_and_nothing_is_created(client, database, body, param):
    tenant = await make_tenant(database)
    response = await client.post("/v1/webhook_endpoints", headers=tenant.headers, json=body)
    error = assert_envelope(response, 400)
    assert error["param"] is not None and re.split(r"[.[]", error["param"])[0] == param, error
    listed = await client.get("/v1/webhook_endpoints", headers=tenant.headers)
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://127.1.2.3:8443/hooks",
        "https://10.0.0.8/hooks",
        "https://172.16.5.4/hooks",
        "https://192.168.1.20/hooks",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "https://100.64.0.1/hooks",  # carrier-grade NAT
        "https://0.0.0.0/hooks",
        "https://[::1]/hooks",
        "https://[fe80::1]/hooks",
        "https://[fd12:3456::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",  # IPv4 inside IPv6
        "https://localhost/hooks",  # a name that resolves to loopback
        "https://localhost./hooks",
        "http://8.8.8.8/hooks",  # plain http
    ],
)
async def test_internal_targets_are_refused(client, database, settings, url):
    settings.webhooks_allow_private = False
    tenant = await make_tenant(database)
    body = {"name": "x", "url": url, "event_types": ALL_TYPES}
    response = await client.post("/v1/webhook_endpoints", headers=tenant.headers, json=body)
    error = assert_envelope(response, 400)
    assert (error["param"], error["code"]) == ("url", "invalid_webhook_url")


async def test_an_update_cannot_aim_an_endpoint_inside(client, database, settings, monkeypatch):
    tenant = await make_tenant(database)
    with receiver() as hooks:
        endpoint = await create_endpoint(client, tenant, hooks.url)
    settings.webhooks_allow_private = False
    response = await client.post(
        f"/v1/webhook_endpoints/{endpoint['id']}",
        headers=tenant.headers,
        json={"url": "https://169.254.169.254/latest/meta-data"},
    )
    assert assert_envelope(response, 400)["code"] == "invalid_webhook_url"
    got = await client.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=tenant.headers)
    assert got.json()["url"] == endpoint["url"]  # unchanged


async def test_answers_holding_a_signing_secret_are_never_kept_for_replay(client, database):
    tenant = await make_tenant(database)
    with receiver() as hooks:
        headers = {**tenant.headers, "Idempotency-Key": "hook-1"}
        body = {"name": "x", "url": hooks.url, "event_types": ALL_TYPES}
        first = await client.post("/v1/webhook_endpoints", headers=headers, json=body)
        rotated = await client.post(
            f"/v1/webhook_endpoints/{first.json()['id']}/rotate_secret",
            headers={**tenant.headers, "Idempotency-Key": "hook-2"},
            json={},
        )
        assert first.status_code == rotated.status_code == 200
    async with database.session() as session:
        kept = (await session.exec(select(IdempotencyRecord))).all()
    assert kept == []  # the secrets live in the endpoint row only
