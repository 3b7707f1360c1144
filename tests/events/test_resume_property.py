"""Property: whatever the points where a client drops and reconnects with its cursor, what it
received across connections is the stored sequence exactly, while events keep being written."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from tests.events.conftest import receive, stored_event_ids, ws
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun

# Per connection: how many events to read before dropping, and whether to drop abruptly
# (TCP abort, no closing handshake) or close cleanly.
connections = st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=5)
# The writer's pauses between steps, in milliseconds.
pauses = st.lists(st.integers(0, 40), min_size=1, max_size=15)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=connections, writer_pauses=pauses)
async def test_reconnecting_client_receives_every_event_exactly_once(
    client, database, live, plan, writer_pauses
):
    tenant = await make_tenant(database, f"p-{uuid.uuid4().hex[:8]}")
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    await engine.start()
    path = f"/v1/fine_tuning/jobs/{job['id']}/events/stream"

    async def write() -> None:
        for pause in writer_pauses:
            await engine.metrics()
            await asyncio.sleep(pause / 1000)

    writer = asyncio.create_task(write())
    received: list[str] = []
    for wanted, abort in plan:
        query = {"after": received[-1]} if received else {}
        async with ws(live, path, tenant.key, **query) as conn:
            got = 0
            while got < wanted:
                try:
                    message = await receive(conn, timeout=0.3)
                except TimeoutError:
                    break  # nothing more for now: drop here
                if message["type"] == "event":
                    received.append(message["event"]["id"])
                    got += 1
            if abort:
                conn.transport.abort()
    await writer
    await engine.fail()
    query = {"after": received[-1]} if received else {}
    async with ws(live, path, tenant.key, **query) as conn:
        try:
            while True:
                message = await receive(conn)
                if message["type"] == "event":
                    received.append(message["event"]["id"])
        except ConnectionClosed:
            pass
    assert conn.close_code == 1000
    assert received == await stored_event_ids(database, job["id"])
