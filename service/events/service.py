"""Rules of the event streams: cursors, replay, job snapshots, stream tickets."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth import Caller
from service.errors import AuthenticationFailed, InvalidRequest
from service.events.hub import Published
from service.events.messages import EventMessage, JobMessage, JobProgress
from service.events.models import StreamTicket
from service.ids import now
from service.jobs import states
from service.jobs.models import Job, JobEvent
from service.jobs.schemas import EventObject, JobObject
from service.jobs.service import get_job
from service.pagination import page
from service.projects.models import ApiKey, Project
from service.projects.service import hash_key

TICKET_PREFIX = "fst_"
# Replay reads the log in pages of this many events.
REPLAY_PAGE = 500
# A project stream starts with a snapshot of at most this many unfinished jobs.
SNAPSHOT_JOBS = 100


@dataclass(frozen=True)
class Scope:
    """What a stream shows: one job, or every job of a project."""

    project_id: str
    job_id: str | None = None

    def events(self) -> list[ColumnElement[bool]]:
        """Conditions that select the scope's events."""
        where = [col(JobEvent.project_id) == self.project_id]
        if self.job_id is not None:
            where.append(col(JobEvent.job_id) == self.job_id)
        return where


@dataclass(frozen=True)
class StreamStart:
    """Where a stream starts: after `position`; `start_id` names it when the client gave none;
    `finished`: a final job with nothing after the client's cursor."""

    position: int
    start_id: str | None = None
    finished: bool = False


# ---------------------------------------------------------------- encoding


def encode_event(event: JobEvent) -> Published:
    """Encode an event row as a stream message, positioned by its pk."""
    message = EventMessage(job_id=event.job_id, event=EventObject.from_row(event))
    return Published(
        job_id=event.job_id,
        project_id=event.project_id,
        text=message.model_dump_json(),
        position=event.pk,
        event_id=event.id,
    )


async def snapshot(session: AsyncSession, job: Job) -> Published:
    """Encode the job's current state, its progress and whether its log is complete."""
    return (await snapshots(session, [job]))[0]


async def snapshots(session: AsyncSession, jobs: Sequence[Job]) -> list[Published]:
    """Encode each job's snapshot, in two or three queries however many jobs there are (a
    project stream starts with up to `SNAPSHOT_JOBS` of them, and clients connect in storms)."""
    if not jobs:
        return []
    ids = [job.id for job in jobs]
    in_jobs = col(JobEvent.job_id).in_(ids)
    last: dict[str, int | None] = dict(
        (
            await session.exec(
                select(JobEvent.job_id, func.max(JobEvent.pk))
                .where(in_jobs)
                .group_by(col(JobEvent.job_id))
            )
        ).all()
    )
    newest_metrics = select(func.max(JobEvent.pk)).where(in_jobs, JobEvent.type == "metrics")
    metrics: dict[str, Any] = dict(
        (
            await session.exec(
                select(JobEvent.job_id, JobEvent.data).where(
                    col(JobEvent.pk).in_(newest_metrics.group_by(col(JobEvent.job_id)))
                )
            )
        ).all()
    )
    return [_snapshot(job, metrics.get(job.id), last.get(job.id)) for job in jobs]


def _snapshot(job: Job, data: dict[str, Any] | None, last: int | None) -> Published:
    progress = None
    if data and "step" in data:
        total = data.get("total_steps")
        progress = JobProgress(step=int(data["step"]), total_steps=int(total) if total else None)
    message = JobMessage(job=JobObject.from_row(job), progress=progress)
    return Published(
        job_id=job.id,
        project_id=job.project_id,
        text=message.model_dump_json(),
        kind="job",
        finished=states.is_terminal(job.status),
        last_position=last,
    )


async def unfinished_jobs(session: AsyncSession, project_id: str) -> list[Job]:
    """The project's unfinished jobs, newest first (at most SNAPSHOT_JOBS)."""
    rows = await session.exec(
        select(Job)
        .where(Job.project_id == project_id, col(Job.status).in_(states.LIVE))
        .order_by(col(Job.pk).desc())
        .limit(SNAPSHOT_JOBS)
    )
    return list(rows.all())


# ---------------------------------------------------------------- cursors and replay


async def start_stream(session: AsyncSession, scope: Scope, cursor: str | None) -> StreamStart:
    """Check the scope (404 for a job not in the project) and place the client's cursor (400
    `after` if the event is not in the scope). Without a cursor a job's stream starts with its
    whole log, a project's with what comes after its newest event."""
    job = None
    if scope.job_id is not None:
        job = await get_job(session=session, project_id=scope.project_id, job_id=scope.job_id)
    if cursor is None:
        if job is not None:
            return StreamStart(position=0)
        newest = await _newest_event(session, scope)
        return StreamStart(position=newest[1], start_id=newest[0]) if newest else StreamStart(0)
    position = (
        await session.exec(select(JobEvent.pk).where(JobEvent.id == cursor, *scope.events()))
    ).first()
    if position is None:
        raise InvalidRequest(f"No event found with id '{cursor}'.", param="after")
    finished = False
    if job is not None and states.is_terminal(job.status):
        newest = await _newest_event(session, scope)
        finished = newest is None or newest[1] <= position
    return StreamStart(position=position, finished=finished)


async def _newest_event(session: AsyncSession, scope: Scope) -> tuple[str, int] | None:
    """The id and position of the scope's newest event, or None when it has none."""
    query = select(JobEvent.id, JobEvent.pk).where(*scope.events())
    row = (await session.exec(query.order_by(col(JobEvent.pk).desc()).limit(1))).first()
    return (row[0], row[1]) if row is not None and row[1] is not None else None


async def events_after(session: AsyncSession, scope: Scope, position: int) -> list[JobEvent]:
    """The scope's events after `position`, oldest first, one page (REPLAY_PAGE) at most."""
    query = select(JobEvent).where(col(JobEvent.pk) > position, *scope.events())
    rows = await session.exec(query.order_by(col(JobEvent.pk)).limit(REPLAY_PAGE))
    return list(rows.all())


async def list_events(
    session: AsyncSession, scope: Scope, *, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """A page of the scope's events, newest first."""
    return await page(session, JobEvent, where=scope.events(), after=after, limit=limit)


# ---------------------------------------------------------------- tickets


async def create_ticket(session: AsyncSession, caller: Caller, ttl: float) -> tuple[str, int]:
    """Issue a single-use ticket for the caller's key; return it and when it expires."""
    value = TICKET_PREFIX + secrets.token_urlsafe(32)
    expires_at = time.time() + ttl
    session.add(
        StreamTicket(
            ticket_hash=hash_key(value),
            api_key_id=caller.key.id,
            created_at=now(),
            expires_at=expires_at,
        )
    )
    await session.commit()
    return value, int(expires_at)


async def redeem_ticket(session: AsyncSession, value: str) -> Caller:
    """Use a ticket up and return its caller; 401 if it is unknown, used or expired."""
    t = time.time()
    redeemed = await session.exec(
        update(StreamTicket)
        .where(
            col(StreamTicket.ticket_hash) == hash_key(value),
            col(StreamTicket.used_at).is_(None),
            col(StreamTicket.expires_at) > t,
        )
        .values(used_at=t)
        .returning(col(StreamTicket.api_key_id))
    )
    key_id = redeemed.scalar_one_or_none()
    await session.commit()
    if key_id is None:
        # One message for every case: a probe learns nothing about which tickets exist.
        raise AuthenticationFailed(
            "Invalid stream ticket: unknown, already used or expired.", code="invalid_ticket"
        )
    key, project = (
        await session.exec(
            select(ApiKey, Project)
            .join(Project, col(Project.id) == col(ApiKey.project_id))
            .where(ApiKey.id == key_id)
        )
    ).one()
    return Caller(key=key, project=project)
