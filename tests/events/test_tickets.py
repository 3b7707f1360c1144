"""Stream tickets: single-use, short-lived credentials that open one stream without a header."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import pytest
from sqlmodel import col, select, update

from service.db import Database
from service.events.messages import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from service.events.models import StreamTicket
from service.idempotency import IdempotencyRecord
from service.janitor import sweep
from service.projects.models import ApiKey
from service.settings import Settings
from tests.events.conftest import receive, receive_until_closed, ws
from tests.factories import Tenant, make_job, make_tenant

TICKETS = "/v1/fine_tuning/stream_tickets"


def job_stream(job_id: str) -> str:
    return f"/v1/fine_tuning/jobs/{job_id}/events/stream"


async def new_ticket(client: httpx.AsyncClient, tenant: Tenant, **headers: str) -> str:
    response = await client.post(TICKETS, headers={**tenant.headers, **headers})
    assert response.status_code == 200, response.text
    ticket: str = response.json()["ticket"]
    return ticket


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def refused(live: str, path: str, **query: str) -> tuple[int | None, list[dict[str, Any]]]:
    """Open a stream without a header; return its close code and whatever it sent first."""
    async with ws(live, path, **query) as connection:
        messages = await receive_until_closed(connection)
        return connection.close_code, messages


async def update_ticket(database: Database, ticket: str, **values: float) -> None:
    async with database.session() as session:
        await session.exec(
            update(StreamTicket)
            .where(col(StreamTicket.ticket_hash) == digest(ticket))
            .values(**values)
        )
        await session.commit()


async def expire(database: Database, ticket: str) -> None:
    await update_ticket(database, ticket, expires_at=time.time() - 1)


async def sse_head(live: str, path: str, params: dict[str, str]) -> list[str]:
    """The lines of a stream up to its first message, read without an Authorization header."""
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=f"http://{live}", timeout=10) as http,
        http.stream("GET", path, params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("data:"):
                break
    return lines


# ---------------------------------------------------------------- issuing


async def test_create_a_ticket(client, database, settings: Settings):
    tenant = await make_tenant(database)
    before = time.time()
    response = await client.post(TICKETS, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"object", "ticket", "expires_at"}
    assert body["object"] == "fine_tuning.stream_ticket"
    assert isinstance(body["ticket"], str) and body["ticket"].startswith("fst_")
    assert len(body["ticket"]) >= 40
    assert isinstance(body["expires_at"], int)
    ttl = settings.stream_ticket_seconds
    assert int(before + ttl) - 1 <= body["expires_at"] <= time.time() + ttl
    assert (await client.post(TICKETS, headers=tenant.headers)).json()["ticket"] != body["ticket"]


async def test_creating_a_ticket_needs_a_key(client, database):
    await make_tenant(database)
    for headers in ({}, {"Authorization": "Bearer sk-ft-not-a-real-key-000000000000000000000"}):
        response = await client.post(TICKETS, headers=headers)
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "authentication_error"
    async with database.session() as session:
        assert (await session.exec(select(StreamTicket))).all() == []


async def test_only_the_tickets_digest_is_stored(client, database):
    tenant = await make_tenant(database)
    ticket = await new_ticket(client, tenant)
    async with database.session() as session:
        rows = (await session.exec(select(StreamTicket))).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.ticket_hash == digest(ticket)
    assert ticket not in repr(row.model_dump())
    assert row.used_at is None


async def test_an_idempotency_key_never_replays_a_ticket(client, database):
    tenant = await make_tenant(database)
    first = await new_ticket(client, tenant, **{"Idempotency-Key": "same"})
    second = await new_ticket(client, tenant, **{"Idempotency-Key": "same"})
    assert first != second
    async with database.session() as session:
        assert (await session.exec(select(IdempotencyRecord))).all() == []
        hashes = set((await session.exec(select(StreamTicket.ticket_hash))).all())
    assert hashes == {digest(first), digest(second)}


# ---------------------------------------------------------------- WebSocket


async def test_a_ticket_opens_a_websocket_once(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    async with ws(live, job_stream(job["id"]), ticket=ticket) as connection:
        first = await receive(connection)
        assert first["type"] == "job" and first["job"]["id"] == job["id"]
        assert (await receive(connection))["type"] == "event"
    async with database.session() as session:
        row = (await session.exec(select(StreamTicket))).one()
    assert row.used_at is not None

    assert await refused(live, job_stream(job["id"]), ticket=ticket) == (CLOSE_UNAUTHENTICATED, [])
    project = await refused(live, "/v1/fine_tuning/events/stream", ticket=ticket)
    assert project == (CLOSE_UNAUTHENTICATED, [])


async def test_a_ticket_opens_the_project_stream(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    async with ws(live, "/v1/fine_tuning/events/stream", ticket=ticket) as connection:
        first = await receive(connection)
        assert first["type"] == "job" and first["job"]["id"] == job["id"]


async def test_an_expired_ticket_is_refused(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    await expire(database, ticket)
    assert await refused(live, job_stream(job["id"]), ticket=ticket) == (CLOSE_UNAUTHENTICATED, [])


@pytest.mark.parametrize("ticket", ["", "fst_unknown", "x" * 100])
async def test_an_unknown_ticket_is_refused(client, database, live, ticket):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    code, messages = await refused(live, job_stream(job["id"]), ticket=ticket)
    assert (code, messages) == (CLOSE_UNAUTHENTICATED, [])


async def test_a_ticket_of_another_project_finds_no_job(client, database, live):
    a = await make_tenant(database, "acme")
    b = await make_tenant(database, "globex")
    b_job = await make_job(client, b)
    ticket = await new_ticket(client, a)
    assert await refused(live, job_stream(b_job["id"]), ticket=ticket) == (CLOSE_NOT_FOUND, [])


async def test_a_ticket_dies_with_its_key(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    async with database.session() as session:
        key = (await session.exec(select(ApiKey))).one()
        await session.delete(key)
        await session.commit()
    assert await refused(live, job_stream(job["id"]), ticket=ticket) == (CLOSE_UNAUTHENTICATED, [])


# ---------------------------------------------------------------- server-sent events


async def test_a_ticket_opens_a_job_sse_stream(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    path = f"/v1/fine_tuning/jobs/{job['id']}/events"
    lines = await sse_head(live, path, {"stream": "true", "ticket": ticket})
    assert lines[0].startswith("retry:")
    assert "event: job" in lines
    assert lines[-1].startswith("data:") and job["id"] in lines[-1]
    # Used up: the same ticket opens nothing more.
    async with httpx.AsyncClient(base_url=f"http://{live}", timeout=10) as http:
        again = await http.get(path, params={"stream": "true", "ticket": ticket})
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "invalid_ticket"


@pytest.mark.parametrize("stream", ["1", "True", "on"])
async def test_every_spelling_of_true_lets_a_ticket_open_a_stream(client, database, live, stream):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)  # so the stream starts with its snapshot
    ticket = await new_ticket(client, tenant)
    lines = await sse_head(live, "/v1/fine_tuning/events", {"stream": stream, "ticket": ticket})
    assert lines[0].startswith("retry:") and job["id"] in lines[-1]


async def test_a_ticket_opens_a_project_sse_stream(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    lines = await sse_head(live, "/v1/fine_tuning/events", {"stream": "true", "ticket": ticket})
    assert "event: job" in lines and job["id"] in lines[-1]


@pytest.mark.parametrize("stream", [None, "false"])
async def test_a_ticket_does_not_authenticate_a_list(client, database, stream):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    ticket = await new_ticket(client, tenant)
    params = {"ticket": ticket} | ({"stream": stream} if stream else {})
    for path in (f"/v1/fine_tuning/jobs/{job['id']}/events", "/v1/fine_tuning/events"):
        response = await client.get(path, params=params)
        assert response.status_code == 401, (path, response.text)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "missing_api_key")
        assert ticket not in error["message"]


async def test_an_sse_ticket_of_another_project_finds_no_job(client, database, live):
    a = await make_tenant(database, "acme")
    b = await make_tenant(database, "globex")
    b_job = await make_job(client, b)
    ticket = await new_ticket(client, a)
    response = await client.get(
        f"/v1/fine_tuning/jobs/{b_job['id']}/events", params={"stream": "true", "ticket": ticket}
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["param"] == "fine_tuning_job_id"


# ---------------------------------------------------------------- janitor


async def test_the_janitor_deletes_expired_tickets(client, database, settings: Settings):
    tenant = await make_tenant(database)
    stale, used_and_stale, fresh = [await new_ticket(client, tenant) for _ in range(3)]
    for ticket in (stale, used_and_stale):
        await expire(database, ticket)
    await update_ticket(database, used_and_stale, used_at=time.time() - 2)
    result = await sweep(
        database=database,
        files_dir=settings.files_dir,
        idempotency_ttl=settings.idempotency_ttl_seconds,
    )
    assert result.stream_tickets == 2
    async with database.session() as session:
        kept = (await session.exec(select(StreamTicket.ticket_hash))).all()
    assert kept == [digest(fresh)]
