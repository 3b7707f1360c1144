"""Fixtures for stream tests: the real app served by uvicorn on a port, and a stream client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from websockets.asyncio.client import ClientConnection, connect

from service.db import Database
from service.jobs.models import JobEvent
from service.server import ServiceServer, server_config
from tests.processes import free_port


@pytest.fixture
async def live_server(app: FastAPI) -> AsyncIterator[ServiceServer]:
    """Serve the app (its lifespan already running) on a free port with uvicorn."""
    port = free_port()
    config = server_config(app, host="127.0.0.1", port=port, log_level="warning")
    config.lifespan = "off"
    server = ServiceServer(config, app)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield server
    server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest.fixture
def live(live_server: ServiceServer) -> str:
    """`host:port` of the live server."""
    return f"127.0.0.1:{live_server.config.port}"


def ws_url(live: str, path: str, **query: str) -> str:
    """The ws:// address of `path` on the live server, with a query string."""
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://{live}{path}" + (f"?{params}" if params else "")


def ws(live: str, path: str, key: str | None = None, **query: str) -> Any:
    """Open a WebSocket to the live server (use with `async with`)."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return connect(ws_url(live, path, **query), additional_headers=headers, open_timeout=10)


async def receive(connection: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next message, decoded."""
    message: dict[str, Any] = json.loads(await asyncio.wait_for(connection.recv(), timeout))
    return message


async def receive_until_closed(
    connection: ClientConnection, timeout: float = 10
) -> list[dict[str, Any]]:
    """Every message until the server closes the connection."""
    from websockets.exceptions import ConnectionClosed

    messages = []
    try:
        while True:
            messages.append(await receive(connection, timeout))
    except ConnectionClosed:
        return messages


async def stored_event_ids(database: Database, job_id: str | None = None) -> list[str]:
    """Every stored event id (of one job, or all), in stream order."""
    query = select(JobEvent.id).order_by(col(JobEvent.pk))
    if job_id is not None:
        query = query.where(JobEvent.job_id == job_id)
    async with database.session() as session:
        return list((await session.exec(query)).all())


def event_ids(messages: list[dict[str, Any]]) -> list[str]:
    """The ids of the `event` messages, in order received."""
    return [m["event"]["id"] for m in messages if m["type"] == "event"]
