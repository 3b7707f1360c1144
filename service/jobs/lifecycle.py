"""The one place where a job changes status, and the job's append-only event log.

Every status change goes through `transition`, which checks the table in `states.py` and
updates the row with a compare-and-set on the old status, so a client's cancel and an engine's
report can never both win. Each change appends an event in the same transaction, and a final
status puts its webhooks in the outbox there too; the caller commits.

Events are committed in the order of their `pk`, which is what lets streams resume from one
event id with no gap (see `service/events`). SQLite gives this for free: it has one writer at a
time. On PostgreSQL a transaction that writes events first takes a transaction-scoped advisory
lock, so event writers commit one after another; it also sends a NOTIFY, delivered at commit,
that wakes the pollers of every API process. Such a transaction takes that lock before it locks
any job row (`lock_event_log`), so lock order is the same everywhere and no deadlock can form.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import flag_commit
from service.errors import Conflict, InvalidRequest
from service.ids import new_id, now
from service.jobs import states
from service.jobs.models import Job, JobEvent
from service.models.pricing import training_cost
from service.webhooks import service as webhooks

# The commit-hook topic and the PostgreSQL channel of new events.
EVENTS_TOPIC = "ft_job_events"
# pg_advisory_xact_lock key that orders event writers (any fixed 64-bit number).
_EVENT_WRITERS_LOCK = 0x66745F6576656E74


class ConcurrentUpdate(Conflict):
    """The job's status changed between reading and writing it."""


class IllegalTransition(InvalidRequest):
    """The status table does not allow this change."""


async def append_event(
    session: AsyncSession,
    job: Job,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
    source_id: str | None = None,
    created_at: int | None = None,
) -> JobEvent:
    """Add an event to the job's log with the next sequence number (not committed).

    `source_id` and `created_at` come with an event an engine reports from elsewhere: the
    provider's id of it (stored once per job) and its time there.
    """
    await lock_event_log(session)
    # UPDATE ... RETURNING takes the job row's lock, so concurrent writers get distinct,
    # increasing numbers on PostgreSQL as on SQLite.
    seq = (
        await session.exec(
            update(Job)
            .where(col(Job.id) == job.id)
            .values(event_seq=col(Job.event_seq) + 1)
            .returning(col(Job.event_seq))
        )
    ).scalar_one()
    event = JobEvent(
        id=new_id("ftevent-"),
        job_id=job.id,
        project_id=job.project_id,
        seq=seq,
        created_at=created_at if created_at is not None else now(),
        level=level,
        message=message,
        type=type,
        data=data,
        source_id=source_id,
    )
    session.add(event)
    return event


async def lock_event_log(session: AsyncSession) -> None:
    """Take the event writers' lock for this transaction (once; PostgreSQL only) and NOTIFY.

    A transaction that may write events must call this before it locks any job row (an
    UPDATE of the job): taking the two locks in one order everywhere is what rules out
    deadlocks between, say, a client's cancel and a worker's checkpoint.
    """
    postgresql = session.bind is not None and session.bind.dialect.name == "postgresql"
    if flag_commit(session, EVENTS_TOPIC) and postgresql:
        await session.exec(select(func.pg_advisory_xact_lock(_EVENT_WRITERS_LOCK)))
        await session.exec(select(func.pg_notify(EVENTS_TOPIC, "")))


async def transition(
    session: AsyncSession,
    job: Job,
    target: str,
    *,
    message: str | None = None,
    level: str = "info",
    announce: bool = True,
    **fields: Any,
) -> None:
    """Move the job to `target` if the status table allows it, and log it (not committed).

    `announce=False` changes the status without an event of ours: for a job mirrored from a
    provider, whose own events already tell the change.
    """
    await lock_event_log(session)
    if not states.is_allowed(job.status, target):
        raise IllegalTransition(
            f"Fine-tuning job {job.id} cannot move from '{job.status}' to '{target}'.",
            code="invalid_status_transition",
        )
    values: dict[str, Any] = {"status": target, "updated_at": now(), **fields}
    if fields.get("trained_tokens") is not None:
        # What the provider bills for the tokens trained, at the price of the day.
        values["cost_usd"] = training_cost(job.base_model, int(fields["trained_tokens"]))
    if states.is_terminal(target):
        values.update(
            finished_at=now(), estimated_finish=None, lease_owner=None, lease_expires_at=None
        )
    result = await session.exec(
        update(Job).where(col(Job.id) == job.id, col(Job.status) == job.status).values(**values)
    )
    if result.rowcount != 1:
        raise ConcurrentUpdate(
            f"Fine-tuning job {job.id} changed status meanwhile; retry.", code="concurrent_update"
        )
    for name, value in values.items():
        setattr(job, name, value)
    text = message or states.ENTER_MESSAGES.get(target)
    if text and announce:
        await append_event(session, job, text, level=level)
    if states.is_terminal(target):
        # In the outbox with the status itself: committed together, or not at all.
        await webhooks.enqueue_job_event(
            session, project_id=job.project_id, job_id=job.id, status=target, at=job.updated_at
        )
