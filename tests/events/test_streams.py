"""WebSocket streams of job events against the real server: snapshot, replay, live, close codes."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.exceptions import ConnectionClosed

from service.db import Database
from service.settings import Settings
from tests.events.conftest import (
    event_ids,
    receive,
    receive_until_closed,
    stored_event_ids,
    ws,
)
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun


def job_path(job_id: str) -> str:
    return f"/v1/fine_tuning/jobs/{job_id}/events/stream"


PROJECT_PATH = "/v1/fine_tuning/events/stream"


async def test_job_stream_sends_snapshot_replay_live_then_closes_1000(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    async with ws(live, job_path(job["id"]), tenant.key) as conn:
        snapshot = await receive(conn)
        assert snapshot["type"] == "job"
        assert snapshot["job"]["id"] == job["id"] and snapshot["job"]["status"] == "queued"
        assert snapshot["progress"] is None
        replayed = [await receive(conn) for _ in await stored_event_ids(database, job["id"])]
        assert event_ids(replayed) == await stored_event_ids(database, job["id"])

        await engine.start()
        await engine.metrics(3)
        await engine.fail()
        live_messages = await receive_until_closed(conn)
        assert conn.close_code == 1000

    received = event_ids(replayed + live_messages)
    assert received == await stored_event_ids(database, job["id"])
    metrics = [m["event"] for m in live_messages if m["type"] == "event"]
    assert [e["data"]["step"] for e in metrics if e["type"] == "metrics"] == [1, 2, 3]
    assert metrics[-1]["message"] == "Fine-tuning job failed: no"
    assert metrics[-1]["level"] == "error"
    statuses = [m["job"]["status"] for m in live_messages if m["type"] == "job"]
    assert statuses[0] == "running" and statuses[-1] == "failed"
    # A status change is followed by a snapshot; a metrics-only step is not.
    assert len(statuses) == 2


async def test_resume_after_an_event_id_sends_exactly_the_rest(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    await engine.start()
    await engine.metrics(5)
    stored = await stored_event_ids(database, job["id"])
    cursor = stored[3]
    async with ws(live, job_path(job["id"]), tenant.key, after=cursor) as conn:
        snapshot = await receive(conn)
        assert snapshot["type"] == "job"
        assert snapshot["progress"] == {"step": 5, "total_steps": None}
        rest = [await receive(conn) for _ in stored[4:]]
        await engine.fail()
        rest += await receive_until_closed(conn)
    assert event_ids(rest) == (await stored_event_ids(database, job["id"]))[4:]


async def test_a_finished_job_replays_and_closes_at_once(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    engine = FakeRun(database, job["id"])
    await engine.start()
    await engine.fail()
    stored = await stored_event_ids(database, job["id"])
    async with ws(live, job_path(job["id"]), tenant.key) as conn:
        messages = await receive_until_closed(conn)
    assert conn.close_code == 1000
    assert messages[0]["job"]["status"] == "failed"
    assert event_ids(messages) == stored
    async with ws(live, job_path(job["id"]), tenant.key, after=stored[-1]) as conn:
        messages = await receive_until_closed(conn)
    assert conn.close_code == 1000 and [m["type"] for m in messages] == ["job"]


async def test_project_stream_shows_every_job_of_the_project_and_no_other(client, database, live):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    first, second = await make_job(client, tenant), await make_job(client, tenant)
    foreign = await make_job(client, other)
    async with ws(live, PROJECT_PATH, tenant.key) as conn:
        snapshots = [await receive(conn), await receive(conn)]
        # Unfinished jobs, newest first; no replay without `after`.
        assert [s["job"]["id"] for s in snapshots] == [second["id"], first["id"]]
        for job in (foreign, first, second):
            response = await client.post(
                f"/v1/fine_tuning/jobs/{job['id']}/cancel",
                headers=(other if job is foreign else tenant).headers,
            )
            assert response.status_code == 200
        messages = []
        while len(event_ids(messages)) < 2:
            messages.append(await receive(conn))
    ids = event_ids(messages)
    assert ids == [
        (await stored_event_ids(database, first["id"]))[-1],
        (await stored_event_ids(database, second["id"]))[-1],
    ]
    assert {m["job_id"] for m in messages if m["type"] == "event"} == {first["id"], second["id"]}


async def test_project_stream_resumes_after_a_cursor_across_jobs(client, database, live):
    tenant = await make_tenant(database)
    first, second = await make_job(client, tenant), await make_job(client, tenant)
    everything = [
        e
        for e in await stored_event_ids(database)
        if e
        in set(await stored_event_ids(database, first["id"]))
        | set(await stored_event_ids(database, second["id"]))
    ]
    async with ws(live, PROJECT_PATH, tenant.key, after=everything[1]) as conn:
        messages = []
        while len(event_ids(messages)) < len(everything) - 2:
            messages.append(await receive(conn))
    assert event_ids(messages) == everything[2:]


async def test_another_projects_job_is_closed_4404_before_any_data(client, database, live):
    owner = await make_tenant(database)
    stranger = await make_tenant(database, "stranger")
    job = await make_job(client, owner)
    for path in (job_path(job["id"]), job_path("ftjob-doesnotexist")):
        async with ws(live, path, stranger.key) as conn:
            with pytest.raises(ConnectionClosed):
                await receive(conn)
        assert conn.close_code == 4404
        assert "not found" in conn.close_reason


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [
        (None, {}, 4401),
        ("sk-wrong-key-000000000000", {}, 4401),
        (None, {"ticket": "fst_made_up"}, 4401),
    ],
)
async def test_bad_credentials_are_closed_4401(client, database, live, key, query, code):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    async with ws(live, job_path(job["id"]), key, **query) as conn:
        with pytest.raises(ConnectionClosed):
            await receive(conn)
    assert conn.close_code == code


async def test_an_unknown_or_foreign_cursor_is_closed_4400(client, database, live):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    job = await make_job(client, tenant)
    foreign_job = await make_job(client, other)
    foreign_event = (await stored_event_ids(database, foreign_job["id"]))[0]
    for after in ("ftevent-nope", foreign_event):
        async with ws(live, job_path(job["id"]), tenant.key, after=after) as conn:
            with pytest.raises(ConnectionClosed):
                await receive(conn)
        assert conn.close_code == 4400
        assert "after" not in conn.close_reason or after in conn.close_reason


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.stream_heartbeat_seconds = 0.3
    return settings


async def test_heartbeats_keep_an_idle_stream_alive(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    async with ws(live, job_path(job["id"]), tenant.key) as conn:
        for _ in await stored_event_ids(database, job["id"]):
            await receive(conn)
        await receive(conn)  # the snapshot
        started = asyncio.get_running_loop().time()
        beats = [await receive(conn, timeout=5), await receive(conn, timeout=5)]
        elapsed = asyncio.get_running_loop().time() - started
    assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
    assert isinstance(beats[0]["time"], int)
    assert 0.4 < elapsed < 3


async def test_client_messages_are_ignored_and_a_disconnect_frees_the_subscription(
    app, client, database, live
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    async with ws(live, job_path(job["id"]), tenant.key) as conn:
        await receive(conn)
        await conn.send('{"type": "anything"}')
        await receive(conn)
        assert app.state.hub.subscriber_count() == 1
    for _ in range(100):
        if app.state.hub.subscriber_count() == 0:
            break
        await asyncio.sleep(0.02)
    assert app.state.hub.subscriber_count() == 0


async def test_server_shutdown_closes_streams_with_1001(client, database, live_server, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    async with ws(live, job_path(job["id"]), tenant.key) as conn:
        await receive(conn)
        live_server.should_exit = True  # what SIGTERM does
        await receive_until_closed(conn)
    assert conn.close_code == 1001


async def test_a_close_reason_never_exceeds_a_frame(client, database, live):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    async with ws(live, job_path(job["id"]), tenant.key, after="é" * 60) as conn:
        await receive_until_closed(conn)
    assert conn.close_code == 4400
    assert len(conn.close_reason.encode()) <= 123


async def test_events_committed_by_another_process_reach_the_stream(
    client, database, database_url, live
):
    """A `worker` process has its own connections: no commit hook of ours fires. SQLite: the
    poller's cheap file check and interval find the commit; PostgreSQL: NOTIFY brings it."""
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    elsewhere = Database(database_url)  # what another process would hold
    try:
        engine = FakeRun(elsewhere, job["id"])
        await engine.start()
        async with ws(live, job_path(job["id"]), tenant.key) as conn:
            for _ in range(1 + len(await stored_event_ids(database, job["id"]))):
                await receive(conn)  # snapshot and replay
            delays = []
            for _ in range(5):
                await engine.metrics()
                committed = time.monotonic()
                while (await receive(conn))["type"] != "event":
                    pass
                delays.append(time.monotonic() - committed)
                await asyncio.sleep(0.3)  # past the skip window of the file check
    finally:
        await elsewhere.dispose()
    # The interval is 50 ms on SQLite; allow for a loaded CI machine.
    assert max(delays) < 0.5, delays


async def test_a_database_failure_closes_the_stream_with_1011_not_a_traceback(
    client, database, live
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("ALTER TABLE fine_tuning_job_events RENAME TO events_gone")
    for query in ({}, {"after": "ftevent-any"}):
        async with ws(live, job_path(job["id"]), tenant.key, **query) as conn:
            messages = await receive_until_closed(conn)
        assert conn.close_code == 1011
        assert messages == []
