"""Poller step: publish the events committed since the last pass, then changed job snapshots."""

from __future__ import annotations

import time
from collections import OrderedDict

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.events import service
from service.events.hub import Hub
from service.jobs.models import Job, JobEvent

# Events read per query; a pass reads pages until it has caught up.
PAGE = 500
# With an unchanged SQLite file the log is not read again for up to this long: a cheap check
# (see Database.change_marker) stands in for the query, and this bounds the rare case it misses
# (another process's commit within the file's timestamp resolution, same size). Commits of this
# process wake the poller at once; each query of an idle service costs a training job a few
# thread hand-offs, so a rare miss waits this long rather than every second paying for it.
QUERY_AT_LEAST_EVERY_SECONDS = 10.0
# Jobs whose last published state is remembered (to publish a snapshot only on a change).
REMEMBERED_JOBS = 10_000


class EventTail:
    """Tails the event log by position (`pk`, which is commit order) and feeds the hub."""

    def __init__(self, *, database: Database, hub: Hub) -> None:
        self._database = database
        self._hub = hub
        self.position: int | None = None
        self._marker: tuple[int, ...] | None = None
        self._queried_at = 0.0
        self._states: OrderedDict[str, tuple[object, ...]] = OrderedDict()
        # Jobs with published events whose snapshot is not published yet (kept across a failed
        # pass: a job's final snapshot is what lets its streams close).
        self._touched: dict[str, None] = {}

    async def poll_once(self) -> int:
        """Publish what is new; return how many events. The first pass only finds the end."""
        # Taken before the query: a commit during the query changes it, so the next pass reads.
        marker = self._database.change_marker()
        if (
            marker is not None
            and marker == self._marker
            and not self._touched
            and time.monotonic() - self._queried_at < QUERY_AT_LEAST_EVERY_SECONDS
        ):
            return 0
        started = time.monotonic()
        published = await self._read_and_publish()
        # Only after a pass that went through: a failed one is tried again at once.
        self._marker, self._queried_at = marker, started
        return published

    async def _read_and_publish(self) -> int:
        async with self._database.session() as session:
            if self.position is None:
                self.position = (await session.exec(select(func.max(JobEvent.pk)))).one() or 0
                return 0
            published = 0
            while True:
                rows = (
                    await session.exec(
                        select(JobEvent)
                        .where(col(JobEvent.pk) > self.position)
                        .order_by(col(JobEvent.pk))
                        .limit(PAGE)
                    )
                ).all()
                for row in rows:
                    self._hub.publish(service.encode_event(row))
                    self.position = row.pk
                    self._touched[row.job_id] = None
                published += len(rows)
                if len(rows) < PAGE:
                    break
            if self._touched:
                await self._publish_changed_jobs(session, list(self._touched))
                self._touched.clear()
            return published

    async def _publish_changed_jobs(self, session: AsyncSession, job_ids: list[str]) -> None:
        jobs = (await session.exec(select(Job).where(col(Job.id).in_(job_ids)))).all()
        for job in jobs:
            # Progress travels in metrics events; a snapshot follows a change of state.
            state = (
                job.status,
                job.fine_tuned_model,
                job.trained_tokens,
                job.finished_at,
                tuple(job.result_files),
                repr(job.error),
            )
            if self._states.get(job.id) == state:
                continue
            self._hub.publish(await service.snapshot(session, job))
            self._states[job.id] = state  # remembered once published
            self._states.move_to_end(job.id)
            while len(self._states) > REMEMBERED_JOBS:
                self._states.popitem(last=False)
