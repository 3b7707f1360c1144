"""Server-sent events: the same stream over HTTP, resumed with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.events.conftest import stored_event_ids
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse a `text/event-stream` body into {id, event, data} dicts, one per message."""
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def read(stream: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The next `count` messages of a parsed stream."""
    async with asyncio.timeout(10):
        return [await anext(stream) for _ in range(count)]


async def read_to_end(response: httpx.Response) -> list[dict[str, Any]]:
    """Every message until the server ends the response."""
    async with asyncio.timeout(10):
        return [message async for message in sse_messages(response)]


async def test_sse_stream_resumes_from_last_event_id_without_gap_or_duplicate(
    client, database, live
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    await engine.start()
    await engine.metrics(2)
    url = f"http://{live}/v1/fine_tuning/jobs/{job['id']}/events"
    async with httpx.AsyncClient(headers=tenant.headers, timeout=10) as http:
        async with http.stream("GET", url, params={"stream": "true"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            first = await read(sse_messages(response), 4)  # the snapshot and three stored events
        assert first[0]["event"] == "job" and "id" not in first[0]
        assert all(m["event"] == "event" and m["id"] == m["data"]["event"]["id"] for m in first[1:])
        last_id = first[-1]["id"]

        await engine.metrics(2)  # written while the client is away
        await engine.fail()
        async with http.stream(
            "GET", url, params={"stream": "true"}, headers={"Last-Event-ID": last_id}
        ) as response:
            rest = await read_to_end(response)  # ends after the job's final event
        async with http.stream(
            "GET", url, params={"stream": "true"}, headers={"Last-Event-ID": rest[-1]["id"]}
        ) as response:
            # Nothing after the final event: 204 tells EventSource to stop reconnecting.
            assert response.status_code == 204

    received = [m["id"] for m in first[1:] + rest if m["event"] == "event"]
    assert received == await stored_event_ids(database, job["id"])


async def test_last_event_id_wins_over_the_after_parameter(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    stored = await stored_event_ids(database, job["id"])
    url = f"http://{live}/v1/fine_tuning/jobs/{job['id']}/events"
    async with (
        httpx.AsyncClient(headers=tenant.headers, timeout=10) as http,
        http.stream(
            "GET",
            url,
            params={"stream": "true", "after": stored[0]},
            headers={"Last-Event-ID": stored[1]},
        ) as response,
    ):
        messages = await read(sse_messages(response), 2)
    assert [m.get("id") for m in messages] == [None, stored[2]]


async def test_project_sse_stream_sends_live_events_with_ids(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    url = f"http://{live}/v1/fine_tuning/events"
    async with (
        httpx.AsyncClient(headers=tenant.headers, timeout=10) as http,
        http.stream("GET", url, params={"stream": "true"}) as response,
    ):
        stream = sse_messages(response)
        snapshot = (await read(stream, 1))[0]
        assert snapshot["event"] == "job" and snapshot["data"]["job"]["id"] == job["id"]
        await engine.start()
        messages = await read(stream, 2)
    assert messages[0]["event"] == "event"
    assert messages[0]["data"]["event"]["message"] == "Fine-tuning job started"
    assert messages[1]["event"] == "job" and messages[1]["data"]["job"]["status"] == "running"


async def test_sse_errors_are_json_envelopes_before_the_stream_starts(client, database):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    job = await make_job(client, tenant)
    url = f"/v1/fine_tuning/jobs/{job['id']}/events"
    cases = [
        (other.headers, {}, 404, "fine_tuning_job_id"),
        (tenant.headers, {"Last-Event-ID": "ftevent-unknown"}, 400, "after"),
        ({}, {}, 401, None),
    ]
    for auth, extra, status, param in cases:
        response = await client.get(url, params={"stream": "true"}, headers={**auth, **extra})
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["param"] == param


async def test_project_event_list_without_stream_is_a_page_newest_first(client, database):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    first, second = await make_job(client, tenant), await make_job(client, tenant)
    await make_job(client, other)
    stored = await stored_event_ids(database, first["id"]) + await stored_event_ids(
        database, second["id"]
    )
    response = await client.get("/v1/fine_tuning/events", headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    assert [e["id"] for e in body["data"]] == stored[::-1]
    assert body["has_more"] is False
    page = await client.get(
        "/v1/fine_tuning/events", params={"after": stored[-2], "limit": 2}, headers=tenant.headers
    )
    assert [e["id"] for e in page.json()["data"]] == stored[-3:-5:-1]


async def test_a_project_stream_names_its_start_so_an_early_reconnect_misses_nothing(
    client, database, live
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    newest = (await stored_event_ids(database, job["id"]))[-1]
    url = f"http://{live}/v1/fine_tuning/events"
    async with httpx.AsyncClient(headers=tenant.headers, timeout=10) as http:
        async with http.stream("GET", url, params={"stream": "true"}) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    break
        # Before any message: the newest event's id, which EventSource keeps as its cursor.
        assert lines[:4] == [f"retry: {2000}", "", f"id: {newest}", ""]
        await FakeRun(database, job["id"]).start()  # written while the client is away
        async with http.stream(
            "GET", url, params={"stream": "true"}, headers={"Last-Event-ID": newest}
        ) as response:
            stream = sse_messages(response)
            messages = await read(stream, 2)
    assert messages[0]["event"] == "job"
    assert messages[1]["event"] == "event"
    assert messages[1]["data"]["event"]["message"] == "Fine-tuning job started"


async def test_the_stream_operations_serve_what_stream_true_serves(client, database, live):
    """`GET .../events/stream` (the document's streamFineTuningEvents and
    streamProjectFineTuningEvents) and the list routes with `stream=true` send the same."""
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    await engine.start()
    await engine.fail()
    base = f"http://{live}/v1/fine_tuning"
    async with httpx.AsyncClient(headers=tenant.headers, timeout=10) as http:
        async with http.stream("GET", f"{base}/jobs/{job['id']}/events/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            operation = await read_to_end(response)
        async with http.stream(
            "GET", f"{base}/jobs/{job['id']}/events", params={"stream": "true"}
        ) as response:
            listed = await read_to_end(response)
        async with http.stream("GET", f"{base}/events/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
    assert [m.get("id") for m in operation] == [m.get("id") for m in listed]
    assert operation[-1]["data"]["event"]["level"] == "error"

    stream = f"/v1/fine_tuning/jobs/{job['id']}/events/stream"
    refused = await client.get(stream, headers=other.headers)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "fine_tuning_job_id"
    assert (await client.get(stream)).status_code == 401
