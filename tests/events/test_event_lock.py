"""PostgreSQL specifics: event writers take the event-log lock before any job-row lock (a
client's cancel racing a worker's report waits instead of deadlocking), and the LISTEN
connection understands the URLs the engine does."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlmodel import col, select

from service.events.listen import Listener
from service.jobs import lifecycle
from service.jobs import service as jobs
from service.jobs.lifecycle import EVENTS_TOPIC
from service.jobs.models import Job, JobEvent
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


async def test_a_cancel_racing_a_workers_event_waits_instead_of_deadlocking(
    client, database, engines
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    await FakeRun(database, job["id"]).start()
    locked = asyncio.Event()

    async def worker_report() -> None:
        # The worker's transaction takes the event-log lock, then (a moment later, as a
        # checkpoint does after its inserts) locks the job row with its event.
        async with database.session() as session:
            row = await jobs.get_job(
                session=session, project_id=tenant.project_id, job_id=job["id"]
            )
            await lifecycle.lock_event_log(session)
            locked.set()
            await asyncio.sleep(0.3)  # the cancel arrives now
            await lifecycle.append_event(session, row, "Checkpoint created at step 1")
            await session.commit()

    async def client_cancel() -> Job:
        await locked.wait()
        async with database.session() as session:
            row = await jobs.get_job(
                session=session, project_id=tenant.project_id, job_id=job["id"]
            )
            return await jobs.cancel_job(session=session, engines=engines, job=row)

    _, cancelled = await asyncio.wait_for(asyncio.gather(worker_report(), client_cancel()), 10)
    assert cancelled.status == "cancelled"
    async with database.session() as session:
        log = (
            await session.exec(
                select(JobEvent.message)
                .where(JobEvent.job_id == job["id"])
                .order_by(col(JobEvent.pk))
            )
        ).all()
    # The cancel waited for the worker's transaction: its event comes after the worker's.
    assert log[-2:] == ["Checkpoint created at step 1", "Fine-tuning job cancelled"]


async def test_the_listener_accepts_the_urls_the_engine_accepts(database_url):
    """Query options of SQLAlchemy's asyncpg URLs are translated, not sent to the server."""
    woken = asyncio.Event()
    url = f"{database_url}?prepared_statement_cache_size=0&ssl=disable"
    listener = Listener(url, EVENTS_TOPIC, woken.set)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert woken.is_set()  # a (re)connection asks for a pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
