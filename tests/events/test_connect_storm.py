"""A storm of project-stream connections must not stall other requests: each start costs a
few queries however many jobs the project runs, and starts are admitted a few at a time
(the latency figure is in bench/stream_connect_storm.py)."""

from __future__ import annotations

import asyncio
import contextlib

import anyio
from sqlalchemy import event

from service.db import Database
from service.events.hub import Hub
from service.events.service import Scope
from service.events.streams import EventStream
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun


async def snapshots_of_a_project_stream(database, project_id: str, jobs: int, starts=None):
    """Open a project stream, read its `jobs` snapshots; return (statements run, messages)."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    stream = EventStream(
        database=database,
        hub=Hub(capacity=100),
        scope=Scope(project_id=project_id),
        after=10**12,  # nothing to replay: the start is the snapshots
        heartbeat_seconds=60,
        starts=starts,
    )
    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    messages = []
    try:
        async with contextlib.aclosing(stream.messages()) as received:
            async for message in received:
                messages.append(message)
                if len(messages) == jobs:
                    break
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    return statements, messages


async def test_a_project_stream_starts_with_a_few_queries_however_many_jobs(
    client, database, database_url
):
    tenant = await make_tenant(database)
    jobs = [await make_job(client, tenant) for _ in range(12)]
    for job in jobs[:6]:  # claimed oldest first
        run = FakeRun(database, job["id"])
        await run.start()
        await run.metrics(2)
    own = Database(database_url)  # its own engine: the app's poller queries the app's
    try:
        statements, messages = await snapshots_of_a_project_stream(own, tenant.project_id, 12)
    finally:
        await own.dispose()
    assert {m.kind for m in messages} == {"job"} and len(messages) == 12
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) <= 4, queries  # jobs, last event per job, newest metrics, replay page
    progress = [m.text for m in messages if '"progress":{"step":2' in m.text]
    assert len(progress) == 6


async def test_stream_starts_wait_for_room(client, database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    starts = anyio.CapacityLimiter(1)
    await starts.acquire()  # the one place is taken
    opening = asyncio.create_task(
        snapshots_of_a_project_stream(database, tenant.project_id, 1, starts)
    )
    await asyncio.sleep(0.3)
    assert not opening.done()
    starts.release()
    _, messages = await asyncio.wait_for(opening, 10)
    assert len(messages) == 1
