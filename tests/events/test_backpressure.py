"""A subscriber that stops reading is cut off (1013) and resumes from its cursor; the others and
the publisher never wait for it."""

from __future__ import annotations

import asyncio
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.settings import Settings
from tests.events.conftest import receive, stored_event_ids, ws, ws_url
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun

QUEUE = 8
EVENTS = 150
PADDING = "x" * 64_000  # makes each event ~64 kB so the slow client's socket fills quickly


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.stream_queue_size = QUEUE
    return settings


async def test_a_slow_consumer_is_cut_off_while_a_fast_one_keeps_receiving(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    await engine.start()
    path = f"/v1/fine_tuning/jobs/{job['id']}/events/stream"
    before = len(await stored_event_ids(database, job["id"]))

    # The slow client: a small receive buffer (set before connecting, so the TCP window is
    # small too), and it reads nothing until the end.
    host, port = live.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect((host, int(port)))
    headers = {"Authorization": f"Bearer {tenant.key}"}
    slow = await connect(ws_url(live, path), sock=sock, additional_headers=headers)
    async with ws(live, path, tenant.key) as fast:
        fast_ids: list[str] = []
        while len(fast_ids) < before:
            message = await receive(fast)
            if message["type"] == "event":
                fast_ids.append(message["event"]["id"])

        async def write() -> None:
            await engine.metrics(EVENTS, note=PADDING)

        writer = asyncio.create_task(write())
        while len(fast_ids) < before + EVENTS:
            message = await receive(fast)
            if message["type"] == "event":
                fast_ids.append(message["event"]["id"])
        await writer
    assert fast_ids == await stored_event_ids(database, job["id"])

    # Now the slow client reads: what was buffered for it, then the 1013 close.
    slow_ids: list[str] = []
    with pytest.raises(ConnectionClosed):
        while True:
            message = await receive(slow)
            if message["type"] == "event":
                slow_ids.append(message["event"]["id"])
    assert slow.close_code == 1013
    assert len(slow_ids) < before + EVENTS
    assert slow_ids == fast_ids[: len(slow_ids)]

    # It resumes from its cursor and misses nothing.
    async with ws(live, path, tenant.key, after=slow_ids[-1]) as again:
        while len(slow_ids) < before + EVENTS:
            message = await receive(again)
            if message["type"] == "event":
                slow_ids.append(message["event"]["id"])
    assert slow_ids == fast_ids
