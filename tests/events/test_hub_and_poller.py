"""The hub's fan-out and back-pressure, the poller's loop, and the event tail on a real database,
woken by commits in this process and (PostgreSQL) by NOTIFY from another connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlmodel import col, func, select

from service import poller as poller_module
from service.db import Database
from service.events.hub import Hub, Published, Subscription, job_topic, project_topic
from service.events.listen import Listener
from service.events.tail import EventTail
from service.jobs.lifecycle import EVENTS_TOPIC, append_event
from service.jobs.models import Job, JobEvent
from service.poller import IdleWait, Poller
from service.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL
from tests.factories import make_job, make_tenant
from tests.fake_engine import FakeRun

# Far longer than any wake-up may take: a message that arrives sooner was woken, not polled.
SLOW_INTERVAL = 5.0
WAKE_DEADLINE = 0.5


def message(job: str = "ftjob-1", project: str = "proj-1", position: int = 1) -> Published:
    return Published(job_id=job, project_id=project, text=f"{job}:{position}", position=position)


# ---------------------------------------------------------------- hub


async def test_hub_fans_out_to_the_job_and_its_project_only():
    hub = Hub()
    with (
        hub.subscribe(job_topic("ftjob-1")) as job_1,
        hub.subscribe(project_topic("proj-1")) as project_1,
        hub.subscribe(job_topic("ftjob-2")) as job_2,
        hub.subscribe(project_topic("proj-2")) as project_2,
        hub.subscribe(("job", "proj-1")) as confusable,  # a job topic named like the project
    ):
        sent = message("ftjob-1", "proj-1")
        hub.publish(sent)
        assert await job_1.take(1) == [sent]
        assert await project_1.take(1) == [sent]
        for other in (job_2, project_2, confusable):
            assert await other.take(0.01) == []

        hub.publish(other_project := message("ftjob-2", "proj-2", 2))
        assert await job_2.take(1) == [other_project]
        assert await project_2.take(1) == [other_project]
        assert await job_1.take(0.01) == []
        assert await project_1.take(0.01) == []


async def test_take_returns_everything_queued_in_publish_order():
    hub = Hub()
    with hub.subscribe(job_topic("ftjob-1")) as subscription:
        sent = [message(position=i) for i in range(1, 6)]
        for m in sent:
            hub.publish(m)
        assert await subscription.take(1) == sent
        assert await subscription.take(0.01) == []


async def test_take_times_out_with_nothing():
    hub = Hub()
    with hub.subscribe(job_topic("ftjob-1")) as subscription:
        started = time.monotonic()
        assert await subscription.take(0.05) == []
        assert time.monotonic() - started >= 0.04
        assert not subscription.overflowed and not subscription.closed


async def test_take_wakes_as_soon_as_a_message_is_published():
    hub = Hub()
    with hub.subscribe(job_topic("ftjob-1")) as subscription:
        waiting = asyncio.create_task(subscription.take(10))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        hub.publish(sent := message())
        assert await asyncio.wait_for(waiting, 1) == [sent]


async def test_a_full_queue_overflows_that_subscriber_only():
    hub = Hub(capacity=2)
    with (
        hub.subscribe(job_topic("ftjob-1")) as slow,
        hub.subscribe(project_topic("proj-1")) as fast,
    ):
        first, second, third = (message(position=i) for i in (1, 2, 3))
        hub.publish(first)
        hub.publish(second)
        assert await fast.take(1) == [first, second]
        hub.publish(third)  # `slow` still holds two: full

        assert slow.overflowed
        assert await asyncio.wait_for(slow.take(10), 1) == []  # cleared, and answers at once
        slow_queue_after = message(position=4)
        hub.publish(slow_queue_after)
        assert await slow.take(0.01) == []  # an overflowed subscription takes nothing more

        assert not fast.overflowed
        assert await fast.take(1) == [third, slow_queue_after]


async def test_close_ends_every_subscription_and_later_ones():
    hub = Hub()
    with hub.subscribe(job_topic("ftjob-1")) as job, hub.subscribe(project_topic("p")) as project:
        waiting = asyncio.create_task(job.take(10))
        await asyncio.sleep(0.01)
        hub.close()
        assert await asyncio.wait_for(waiting, 1) == []
        assert job.closed and project.closed
        assert await asyncio.wait_for(project.take(10), 1) == []
        hub.publish(message())
        assert await asyncio.wait_for(job.take(10), 1) == []  # nothing is offered once closed
        with hub.subscribe(job_topic("ftjob-2")) as late:
            assert late.closed
            assert await asyncio.wait_for(late.take(10), 1) == []


async def test_leaving_the_block_unsubscribes():
    hub = Hub()
    with hub.subscribe(job_topic("ftjob-1")) as first:
        with hub.subscribe(job_topic("ftjob-1")) as second:
            assert hub.subscriber_count() == 2
        assert hub.subscriber_count() == 1
        hub.publish(sent := message())
        assert await first.take(1) == [sent]
        assert await second.take(0.01) == []
    assert hub.subscriber_count() == 0
    with contextlib.suppress(RuntimeError), hub.subscribe(project_topic("p")):
        raise RuntimeError("a stream that fails still unsubscribes")
    assert hub.subscriber_count() == 0


# ---------------------------------------------------------------- poller loop


class FakeStep:
    """A poll step that counts its passes and can be told to fail."""

    def __init__(self, handled: int = 0, *, failures: int = 0) -> None:
        self.handled = handled
        self.failures = failures
        self.passes = 0
        self._passed = asyncio.Condition()

    async def poll_once(self) -> int:
        self.passes += 1
        async with self._passed:
            self._passed.notify_all()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is down")
        return self.handled

    async def wait_for_pass(self, number: int, timeout: float = 2.0) -> float:
        """Wait until pass `number` has begun; return how long that took."""
        started = time.monotonic()
        async with self._passed:
            await asyncio.wait_for(self._passed.wait_for(lambda: self.passes >= number), timeout)
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(poller: Poller) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(poller.run())
    try:
        yield task
    finally:
        poller.stop()
        await asyncio.wait_for(task, 5)


async def test_poll_once_runs_each_step_and_sums_what_they_handled():
    steps = [FakeStep(2), FakeStep(0), FakeStep(5)]
    poller = Poller(steps, interval=60)
    assert await poller.poll_once() == 7
    assert [s.passes for s in steps] == [1, 1, 1]


async def test_wake_triggers_a_pass_without_waiting_for_the_interval():
    step = FakeStep()
    poller = Poller([step], interval=60)
    poller.wake()  # before `run`: nothing to wake, and no error
    async with running(poller):
        await step.wait_for_pass(1)
        await asyncio.sleep(0.05)
        assert step.passes == 1  # waits for the interval or a wake-up
        poller.wake()
        assert await step.wait_for_pass(2) < WAKE_DEADLINE
        # From another thread, as a database driver's callback might.
        await asyncio.get_running_loop().run_in_executor(None, poller.wake)
        assert await step.wait_for_pass(3) < WAKE_DEADLINE


async def test_the_interval_triggers_a_pass():
    step = FakeStep()
    async with running(Poller([step], interval=0.02)):
        await step.wait_for_pass(4)


async def test_stop_ends_run():
    step = FakeStep()
    poller = Poller([step], interval=60)
    task = asyncio.create_task(poller.run())
    await step.wait_for_pass(1)
    poller.stop()
    await asyncio.wait_for(task, 1)
    assert step.passes == 1


async def test_a_failing_step_is_logged_and_retried(monkeypatch, caplog):
    monkeypatch.setattr(poller_module, "RETRY_SECONDS", 0.01)
    failing, healthy = FakeStep(failures=2), FakeStep(1)
    poller = Poller([failing, healthy], interval=60)
    with caplog.at_level(logging.ERROR, logger="service.poller"):
        async with running(poller) as task:
            # Retried after the (short) retry delay, not the minute-long interval.
            await failing.wait_for_pass(3)
            assert not task.done()
            await asyncio.sleep(0.05)
            assert failing.passes == 3  # healthy again: back to waiting for the interval
            await healthy.wait_for_pass(1)
            poller.wake()
            await healthy.wait_for_pass(2)
    failures = [r for r in caplog.records if r.name == "service.poller"]
    assert len(failures) == 2
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


# ---------------------------------------------------------------- event tail (real database)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The app's poller must be woken by commits: its interval alone would be far too late.
    settings.event_poll_seconds = SLOW_INTERVAL
    return settings


async def all_events(database: Database, after: int = 0) -> list[JobEvent]:
    async with database.session() as session:
        rows = await session.exec(
            select(JobEvent).where(col(JobEvent.pk) > after).order_by(col(JobEvent.pk))
        )
        return list(rows.all())


async def last_position(database: Database) -> int:
    async with database.session() as session:
        return (await session.exec(select(func.max(JobEvent.pk)))).one() or 0


async def claim_and_start(database: Database, job_id: str) -> None:
    await FakeRun(database, job_id).start()


async def log_step(database: Database, job_id: str, step: int) -> JobEvent:
    return await FakeRun(database, job_id).log(step, total_steps=10)


def decoded(published: Published) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(published.text)
    return data


async def drain(subscription: Subscription) -> list[Published]:
    """What a pass published (a pass publishes synchronously: no waiting needed)."""
    return await subscription.take(0)


async def test_first_pass_only_finds_the_end(client: httpx.AsyncClient, database: Database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    hub = Hub()
    tail = EventTail(database=database, hub=hub)
    with hub.subscribe(project_topic(tenant.project_id)) as subscription:
        assert await tail.poll_once() == 0
        assert tail.position == await last_position(database) > 0
        assert await drain(subscription) == []
        assert await tail.poll_once() == 0  # nothing new since
        assert await drain(subscription) == []


async def test_tail_publishes_in_commit_order_exactly_once(
    client: httpx.AsyncClient, database: Database
):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "globex")
    hub = Hub()
    tail = EventTail(database=database, hub=hub)
    await tail.poll_once()
    start = tail.position or 0
    seen: list[Published] = []
    with (
        hub.subscribe(project_topic(tenant.project_id)) as mine,
        hub.subscribe(project_topic(other.project_id)) as theirs,
    ):
        first = await make_job(client, tenant)
        second = await make_job(client, other)
        assert await tail.poll_once() == 6  # three events per created job
        seen += await drain(mine) + await drain(theirs)
        await claim_and_start(database, first["id"])
        await log_step(database, first["id"], 1)
        cancelled = await client.post(
            f"/v1/fine_tuning/jobs/{second['id']}/cancel", headers=other.headers
        )
        assert cancelled.status_code == 200
        await log_step(database, first["id"], 2)
        assert await tail.poll_once() == 4
        assert await tail.poll_once() == 0
        seen += await drain(mine) + await drain(theirs)

    stored = await all_events(database, start)
    events = sorted((m for m in seen if m.kind == "event"), key=lambda m: m.position or 0)
    assert [m.event_id for m in events] == [e.id for e in stored]  # each one, once
    assert [m.position for m in events] == [e.pk for e in stored]
    for m, row in zip(events, stored, strict=True):
        assert (m.job_id, m.project_id) == (row.job_id, row.project_id)
        body = decoded(m)
        assert body["type"] == "event" and body["job_id"] == row.job_id
        assert body["event"]["id"] == row.id and body["event"]["message"] == row.message
    # Each subscriber got its project's events in stream order.
    for project in (tenant.project_id, other.project_id):
        positions = [m.position for m in seen if m.kind == "event" and m.project_id == project]
        assert positions == sorted(positions) and positions
    assert tail.position == stored[-1].pk


async def test_tail_misses_nothing_while_writers_commit_concurrently(
    client: httpx.AsyncClient, database: Database
):
    """Transactions that write events overlap; the tail, polling meanwhile, still sees each
    event once and in order (on PostgreSQL, thanks to the event writers' lock)."""
    tenant = await make_tenant(database)
    jobs = [(await make_job(client, tenant))["id"] for _ in range(4)]
    hub = Hub()
    tail = EventTail(database=database, hub=hub)
    await tail.poll_once()
    start = tail.position or 0

    async def write(job_id: str, count: int) -> None:
        for i in range(count):
            async with database.session() as session:
                row = (await session.exec(select(Job).where(Job.id == job_id))).one()
                await append_event(session, row, f"event {i}")
                await session.flush()
                # Held open for a while, so that transactions overlap and commit out of order.
                await asyncio.sleep(random.uniform(0, 0.005))
                await session.commit()

    published: list[Published] = []
    with hub.subscribe(project_topic(tenant.project_id)) as subscription:
        writers = asyncio.gather(*(write(job_id, 15) for job_id in jobs))
        while not writers.done():
            await tail.poll_once()
            published += await drain(subscription)
            await asyncio.sleep(0)
        await writers
        await tail.poll_once()
        published += await drain(subscription)

    stored = await all_events(database, start)
    assert len(stored) == 60
    assert [m.event_id for m in published if m.kind == "event"] == [e.id for e in stored]


async def test_a_snapshot_follows_a_change_of_status_not_a_metrics_step(
    client: httpx.AsyncClient, database: Database
):
    tenant = await make_tenant(database)
    hub = Hub()
    tail = EventTail(database=database, hub=hub)
    await tail.poll_once()
    job = await make_job(client, tenant)
    with hub.subscribe(job_topic(job["id"])) as subscription:
        await tail.poll_once()
        created = await drain(subscription)
        assert [m.kind for m in created] == ["event", "event", "event", "job"]
        assert decoded(created[-1])["job"]["status"] == "queued"

        await claim_and_start(database, job["id"])
        await tail.poll_once()
        started = await drain(subscription)
        assert [m.kind for m in started] == ["event", "job"]
        snapshot = decoded(started[-1])
        assert snapshot["type"] == "job" and snapshot["job"]["status"] == "running"
        assert snapshot["progress"] is None
        assert not started[-1].finished

        step = await log_step(database, job["id"], 3)
        await tail.poll_once()
        stepped = await drain(subscription)
        assert [m.kind for m in stepped] == ["event"]  # progress travels in the event itself
        assert stepped[0].event_id == step.id
        assert decoded(stepped[0])["event"]["data"]["step"] == 3

        cancelled = await client.post(
            f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers
        )
        assert cancelled.status_code == 200
        await tail.poll_once()
        ended = await drain(subscription)
        assert [m.kind for m in ended] == ["event", "job"]
        final = ended[-1]
        assert decoded(final)["job"]["status"] == "cancelled"
        assert decoded(final)["progress"] == {"step": 3, "total_steps": 10}
        assert final.finished and final.last_position == ended[0].position


async def test_commit_hooks_run_once_per_committed_transaction_that_wrote_events(
    client: httpx.AsyncClient, database: Database, database_url: str
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    calls: list[str] = []
    other = Database(database_url)
    other.after_commit(EVENTS_TOPIC, lambda: calls.append("events"))
    other.after_commit("unrelated", lambda: calls.append("unrelated"))
    try:
        async with other.session() as session:
            row = (await session.exec(select(Job).where(Job.id == job["id"]))).one()
            await append_event(session, row, "one")
            await append_event(session, row, "two")
            assert calls == []  # not before the commit
            await session.commit()
            assert calls == ["events"]  # once for the transaction, as soon as it commits

            await append_event(session, row, "rolled back")
            await session.rollback()
            await session.commit()  # the flag went with the rollback
            assert calls == ["events"]

            row.suffix = "no-events"  # a commit that wrote no event
            session.add(row)
            await session.commit()
            assert calls == ["events"]
    finally:
        await other.dispose()


async def test_a_commit_in_this_process_wakes_the_running_poller(
    app: FastAPI, client: httpx.AsyncClient, database: Database
):
    # On SQLite only the commit hook can wake the poller; on PostgreSQL NOTIFY may win the race.
    assert app.state.poller.interval == SLOW_INTERVAL
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    hub: Hub = app.state.hub
    with hub.subscribe(job_topic(job["id"])) as subscription:
        await claim_and_start(database, job["id"])
        await wait_for_event(subscription)  # warm-up: "started"
        await asyncio.sleep(0.05)  # the poller is idle, waiting for its (long) interval
        await drain(subscription)  # the snapshot of the running job
        for step in (1, 2, 3):
            event = await log_step(database, job["id"], step)
            committed = time.monotonic()
            received = await subscription.take(SLOW_INTERVAL / 2)
            latency = time.monotonic() - committed
            assert [m.event_id for m in received] == [event.id]
            assert latency < WAKE_DEADLINE, f"step {step} took {latency:.3f} s"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_notify_from_another_connection_wakes_the_poller(
    client: httpx.AsyncClient, database: Database, database_url: str
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    hub = Hub()
    reader = Database(database_url)
    writer = Database(database_url)  # no hook of this process's poller sees its commits
    poller = Poller([EventTail(database=reader, hub=hub)], interval=60)
    await poller.poll_once()
    listener = Listener(database_url, EVENTS_TOPIC, poller.wake)
    listening = asyncio.create_task(listener.run())
    try:
        async with running(poller):
            await asyncio.wait_for(listener.connected.wait(), 10)
            with hub.subscribe(project_topic(tenant.project_id)) as subscription:
                await asyncio.sleep(0.05)
                await claim_and_start(writer, job["id"])
                await wait_for_event(subscription)  # warm-up: "started"
                for step in (1, 2, 3):
                    event = await log_step(writer, job["id"], step)
                    committed = time.monotonic()
                    received = await wait_for_event(subscription)
                    latency = time.monotonic() - committed
                    assert received.event_id == event.id
                    assert latency < WAKE_DEADLINE, f"step {step} took {latency:.3f} s"
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await reader.dispose()
        await writer.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_listener_reconnects_and_catches_up(
    client: httpx.AsyncClient, database: Database, database_url: str
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    calls = 0
    called = asyncio.Event()

    def on_notify() -> None:
        nonlocal calls
        calls += 1
        called.set()

    async def calls_reach(number: int) -> None:
        while calls < number:
            await asyncio.wait_for(called.wait(), 10)
            called.clear()

    # Named, to tell its connection from the app's own listener.
    named = f"{database_url}?application_name=listener-under-test"
    listener = Listener(named, EVENTS_TOPIC, on_notify)
    listening = asyncio.create_task(listener.run())
    try:
        await calls_reach(1)  # once on connecting: whatever came before is looked at
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            terminated = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = 'listener-under-test'",
                (make_url(database_url).database,),
            ).fetchall()
        assert terminated == [(True,)]
        await calls_reach(2)  # reconnected, and catching up
        await asyncio.wait_for(listener.connected.wait(), 10)
        await claim_and_start(database, job["id"])  # commits an event, so a NOTIFY
        await calls_reach(3)
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening


async def wait_for_event(subscription: Subscription) -> Published:
    """The next event published to the subscription (snapshots are skipped)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for m in await subscription.take(deadline - time.monotonic()):
            if m.kind == "event":
                return m
    raise AssertionError("no event was published")


async def test_a_pass_after_a_rolled_back_write_publishes_nothing(
    client: httpx.AsyncClient, database: Database
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    hub = Hub()
    tail = EventTail(database=database, hub=hub)
    await tail.poll_once()
    with hub.subscribe(job_topic(job["id"])) as subscription:
        async with database.session() as session:
            row = (await session.exec(select(Job).where(Job.id == job["id"]))).one()
            await append_event(session, row, "never committed")
            await session.flush()
            await session.rollback()
        assert await tail.poll_once() == 0
        assert await drain(subscription) == []


def test_idle_passes_stretch_the_wait_and_work_resets_it():
    wait = IdleWait(0.05, 1.0)
    assert [wait.after(False) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert wait.after(True) == 0.05
    assert IdleWait(5.0, 1.0).after(False) == 5.0  # the interval is never shortened


async def test_an_idle_poller_passes_rarely_but_a_wake_is_answered_at_once():
    class Counter:
        passes = 0

        async def poll_once(self) -> int:
            self.passes += 1
            return 0

    counter = Counter()
    poller = Poller([counter], interval=0.01)
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.7)
    # 70 passes at the interval; idle, 0.02 + 0.04 + ... reaches 0.7 s after 6 passes.
    assert counter.passes <= 7
    before = counter.passes
    poller.wake()
    await asyncio.sleep(0.005)
    assert counter.passes > before  # woken: a pass at once, then the short interval again
    poller.stop()
    await asyncio.wait_for(task, 2)
