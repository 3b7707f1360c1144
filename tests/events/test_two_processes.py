"""Two real API processes on one PostgreSQL database: a stream on one sees, within 200 ms, in
order and once, every event committed by the other process or by a worker elsewhere.

Server B polls only every 10 s, so only NOTIFY can bring it an event that quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.db import Database
from service.events.messages import CLOSE_JOB_FINISHED
from tests.factories import Tenant, make_job
from tests.fake_engine import FakeRun
from tests.processes import Server, serve, service_env

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

ADMIN_KEY = "sk-ft-two-processes-admin-0000000000000000"
# The servers run no worker: the test plays the local engine's worker on the shared database.
SERVED_ENGINE = "local"
DEADLINE = 0.2  # seconds from a commit to its event on the other server's stream
STEPS = 5


class StreamReader:
    """Reads a WebSocket in the background, noting when each message arrived."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._changed = asyncio.Condition()
        self.ended = False
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.connection:
                self.received.append((time.monotonic(), json.loads(text)))
                async with self._changed:
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.ended = True
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(
        self, found: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> tuple[float, dict[str, Any]]:
        """The first message (and its arrival time) for which `found` is true."""

        def first() -> tuple[float, dict[str, Any]] | None:
            return next(((at, m) for at, m in self.received if found(m)), None)

        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: first() is not None or self.ended), timeout
            )
        match = first()
        assert match is not None, f"the stream ended without it: {self.messages()}"
        return match

    async def event(self, event_id: str) -> float:
        """When the event arrived."""
        at, _ = await self.wait_for(lambda m: m["type"] == "event" and m["event"]["id"] == event_id)
        return at

    def messages(self) -> list[dict[str, Any]]:
        return [m for _, m in self.received]

    def event_ids(self) -> list[str]:
        return [m["event"]["id"] for m in self.messages() if m["type"] == "event"]

    async def close(self) -> None:
        await self.connection.close()
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(self.task, 10)


def ws_base(server: Server) -> str:
    return server.url.replace("http://", "ws://")


async def open_stream(server: Server, path: str, tenant: Tenant) -> ClientConnection:
    return await connect(ws_base(server) + path, additional_headers=tenant.headers, open_timeout=10)


async def receive(connection: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(connection.recv(), 10))
    return message


async def stored_event_ids(http: httpx.AsyncClient, tenant: Tenant, job_id: str) -> list[str]:
    """The job's events, oldest first, as the API lists them."""
    response = await http.get(
        f"/v1/fine_tuning/jobs/{job_id}/events", headers=tenant.headers, params={"limit": 1000}
    )
    assert response.status_code == 200, response.text
    return [e["id"] for e in reversed(response.json()["data"])]


async def make_project_key(http: httpx.AsyncClient) -> Tenant:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    project = await http.post("/v1/organization/projects", headers=admin, json={"name": "acme"})
    assert project.status_code == 200, project.text
    project_id = project.json()["id"]
    key = await http.post(
        f"/v1/organization/projects/{project_id}/api_keys", headers=admin, json={"name": "ci"}
    )
    assert key.status_code == 200, key.text
    return Tenant(project_id=project_id, key=key.json()["value"])


@contextlib.contextmanager
def two_servers(database_url: str, tmp_path: Path, models_dir: Path) -> Any:
    env = service_env(
        database_url=database_url,
        models_dir=str(models_dir),
        data_dir=str(tmp_path / "data"),  # shared, as replicas share a volume
        bootstrap_api_key=ADMIN_KEY,
        embedded_worker="0",
        event_poll_seconds="10",
        log_level="warning",
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve(tmp_path / "a", env) as a, serve(tmp_path / "b", env) as b:
        yield a, b


async def test_events_reach_the_other_servers_streams_at_once(
    database_url: str, tmp_path: Path, tiny_model_dir: Path
):
    latencies: dict[str, float] = {}
    with two_servers(database_url, tmp_path, tiny_model_dir.parent) as (a, b):
        async with httpx.AsyncClient(base_url=a.url, timeout=30) as http:
            tenant = await make_project_key(http)
            job = await make_job(http, tenant, model="tiny-chat")
            job_id = job["id"]
            created = await stored_event_ids(http, tenant, job_id)
            assert len(created) == 3

            # B: the job's stream (snapshot, then the whole log replayed) and the project's.
            job_connection = await open_stream(
                b, f"/v1/fine_tuning/jobs/{job_id}/events/stream", tenant
            )
            snapshot = await receive(job_connection)
            assert snapshot["type"] == "job" and snapshot["job"]["id"] == job_id
            assert snapshot["job"]["status"] == "queued"
            replayed = [await receive(job_connection) for _ in created]
            assert [m["event"]["id"] for m in replayed] == created
            project_connection = await open_stream(b, "/v1/fine_tuning/events/stream", tenant)
            project_snapshot = await receive(project_connection)
            assert project_snapshot["type"] == "job" and project_snapshot["job"]["id"] == job_id
            job_stream = StreamReader(job_connection)
            project_stream = StreamReader(project_connection)

            async def measure(name: str, event_id: str) -> None:
                committed = time.monotonic()
                latencies[name] = await job_stream.event(event_id) - committed

            async def last_event_id() -> str:
                return (await stored_event_ids(http, tenant, job_id))[-1]

            async def client_action(action: str, status: str) -> str:
                """`action` the job through server A; time its event's arrival on B."""
                response = await http.post(
                    f"/v1/fine_tuning/jobs/{job_id}/{action}", headers=tenant.headers
                )
                assert response.status_code == 200 and response.json()["status"] == status
                committed = time.monotonic()
                event_id = await last_event_id()
                latencies[action] = await job_stream.event(event_id) - committed
                return event_id

            worker = Database(database_url)
            try:
                # Warm-up: the first event on fresh connections is not measured.
                run = FakeRun(worker, job_id, engine=SERVED_ENGINE, worker="worker-elsewhere")
                await run.start()
                await job_stream.event(await last_event_id())

                for _ in range(STEPS):
                    event_id = await run.metrics(total_steps=10)
                    await measure(f"step {run.step}", event_id)

                await client_action("pause", "paused")

                # The step under way when paused.
                event_id = await run.metrics(total_steps=10, train_loss=0.1)
                await measure("step after pause", event_id)

                cancel_event = await client_action("cancel", "cancelled")
            finally:
                await worker.dispose()

            # The job's stream ends once the job is final and its last event was sent.
            await asyncio.wait_for(job_stream.task, 10)
            assert job_connection.close_code == CLOSE_JOB_FINISHED
            everything = await stored_event_ids(http, tenant, job_id)
            assert everything[-1] == cancel_event
            assert created + job_stream.event_ids() == everything  # in order, once each
            statuses = [m["job"]["status"] for m in job_stream.messages() if m["type"] == "job"]
            # (B may publish its snapshot of the new job after the stream began: "queued".)
            assert [s for s in statuses if s != "queued"] == ["running", "paused", "cancelled"]

            # The project's stream saw the same live events, in order, once each.
            await project_stream.event(cancel_event)
            await asyncio.sleep(0.3)  # room for a duplicate to show up
            assert project_stream.event_ids() == everything[len(created) :]
            await project_stream.close()

    slow = {name: round(seconds, 3) for name, seconds in latencies.items() if seconds >= DEADLINE}
    assert len(latencies) == STEPS + 3
    assert not slow, f"events later than {DEADLINE} s on the other server: {latencies}"
