"""The calls an engine makes to run a job: claim it with a lease, report progress and results.

A worker claims a queued job (or one whose previous worker's lease expired), heartbeats to keep
its lease and learn of a pause or cancel, logs metrics and checkpoints, and ends the job with
success or failure. Every call checks that the worker still holds the lease.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.checkpoints.models import Checkpoint
from service.errors import Conflict
from service.ids import new_id, now, random_base62
from service.jobs import states
from service.jobs.lifecycle import append_event, lock_event_log, transition
from service.jobs.models import Job, JobEvent
from service.models.models import FineTunedModel

CHECKPOINTS_KEPT = 3


class LeaseLost(Conflict):
    """The worker no longer holds the job (it expired, or the job was taken over)."""


async def _held(session: AsyncSession, job_id: str, worker_id: str) -> Job:
    # populate_existing: read the row as it is now, not as this session first saw it.
    job = (
        await session.exec(
            select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        )
    ).first()
    if job is None or job.lease_owner != worker_id:
        raise LeaseLost(f"Worker {worker_id} does not hold job {job_id}.", code="lease_lost")
    return job


async def claim_next_job(
    *,
    session: AsyncSession,
    engine: str,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int = 3,
) -> Job | None:
    """Take the oldest queued job of `engine` (or one whose worker's lease expired).

    A job whose previous worker vanished goes back through `queued` with an event; after
    `max_attempts` claims without a clean stop it fails instead.
    """
    while True:
        # A recovered job moves through `transition`, which logs an event: the event writers'
        # lock comes before the row lock below.
        await lock_event_log(session)
        t = time.time()
        free = or_(col(Job.lease_owner).is_(None), col(Job.lease_expires_at) < t)
        claimable = or_(
            and_(col(Job.status) == "queued", free),
            and_(col(Job.status) == "running", col(Job.lease_expires_at) < t),
        )
        query = (
            select(Job.id)
            .where(col(Job.engine) == engine, claimable)
            .order_by(col(Job.pk))
            .limit(1)
        )
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # Other workers skip the row we are looking at instead of queueing behind it.
            query = query.with_for_update(skip_locked=True)
        job_id = (await session.exec(query)).first()
        if job_id is None:
            await session.rollback()
            return None
        claimed = await session.exec(
            update(Job)
            .where(col(Job.id) == job_id, claimable)
            .values(
                lease_owner=worker_id,
                lease_expires_at=t + lease_seconds,
                attempts=col(Job.attempts) + 1,
            )
        )
        if claimed.rowcount != 1:
            await session.rollback()  # another worker won the race; look again
            continue
        job = (await session.exec(select(Job).where(Job.id == job_id))).one()
        await session.refresh(job)
        if job.status == "running":
            if job.attempts > max_attempts:
                await transition(
                    session,
                    job,
                    "failed",
                    message=f"Fine-tuning job failed: its worker stopped {max_attempts} times",
                    level="error",
                    error={
                        "code": "worker_lost",
                        "message": f"The job's worker stopped unexpectedly {max_attempts} times.",
                        "param": None,
                    },
                )
                await session.commit()
                continue
            await transition(session, job, "queued", message=states.REQUEUED_MESSAGE, level="warn")
        await session.commit()
        return job


async def heartbeat(
    *, session: AsyncSession, job_id: str, worker_id: str, lease_seconds: float
) -> str:
    """Extend the worker's lease and return the job's status (to honour pause and cancel)."""
    result = await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.lease_owner) == worker_id)
        .values(lease_expires_at=time.time() + lease_seconds)
    )
    if result.rowcount != 1:
        await session.rollback()
        raise LeaseLost(f"Worker {worker_id} does not hold job {job_id}.", code="lease_lost")
    await session.commit()
    status = (await session.exec(select(Job.status).where(Job.id == job_id))).one()
    return status


async def start_job(
    *,
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    hyperparameters: Mapping[str, Any],
    estimated_finish: int | None = None,
    setup: tuple[str, dict[str, Any]] | None = None,
) -> Job:
    """Mark the held job running and write back its resolved hyperparameters.

    `setup` is the engine's account of how it trains (text and data), logged after the start.
    """
    job = await _held(session, job_id, worker_id)
    method = dict(job.method)
    kind = method["type"]
    config = dict(method.get(kind) or {})
    config["hyperparameters"] = {**config.get("hyperparameters", {}), **hyperparameters}
    method[kind] = config
    await transition(session, job, "running", method=method, estimated_finish=estimated_finish)
    if setup is not None:
        await append_event(session, job, setup[0], data=setup[1])
    await session.commit()
    return job


def metrics_message(metrics: Mapping[str, Any]) -> str:
    """Format a step's metrics the way OpenAI's event log does."""
    text = f"Step {metrics['step']}/{metrics.get('total_steps', '?')}"
    parts = []
    if metrics.get("train_loss") is not None:
        parts.append(f"training loss={float(metrics['train_loss']):.2f}")
    if metrics.get("full_valid_loss") is not None:
        parts.append(f"full validation loss={float(metrics['full_valid_loss']):.2f}")
    elif metrics.get("valid_loss") is not None:
        parts.append(f"validation loss={float(metrics['valid_loss']):.2f}")
    return f"{text}: {', '.join(parts)}" if parts else text


async def append_metrics(
    *,
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    metrics: Mapping[str, Any],
    estimated_finish: int | None = None,
) -> JobEvent:
    """Log one training step's metrics (OpenAI's `metrics` event) for a running job."""
    if "step" not in metrics:
        raise ValueError("metrics need a 'step'")
    clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    await lock_event_log(session)  # before the estimated_finish UPDATE locks the job row
    job = await _held(session, job_id, worker_id)
    # A step finishing just after a pause is requested still happened: log it, so the
    # resumed run continues a gap-free series.
    if job.status not in ("running", "paused"):
        raise Conflict(f"Fine-tuning job {job_id} is {job.status}, not running.")
    if estimated_finish is not None:
        await session.exec(
            update(Job).where(col(Job.id) == job_id).values(estimated_finish=estimated_finish)
        )
    event = await append_event(
        session, job, metrics_message(clean), type="metrics", data=dict(clean)
    )
    await session.commit()
    return event


def model_name(base: str, organization: str, suffix: str | None) -> str:
    """Return a new fine-tuned model name `ft:<base>:<org>:<suffix>:<id8>`."""
    return f"ft:{base}:{organization}:{suffix or ''}:{random_base62(8)}"


async def add_checkpoint(
    *,
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    organization: str,
    step_number: int,
    metrics: Mapping[str, Any],
    location: str | None = None,
) -> tuple[Checkpoint, list[str]]:
    """Record a checkpoint; return it and the locations of older ones no longer kept."""
    job = await _held(session, job_id, worker_id)
    name = f"{model_name(job.base_model, organization, job.suffix)}:ckpt-step-{step_number}"
    checkpoint = Checkpoint(
        id=new_id("ftckpt_"),
        job_id=job.id,
        project_id=job.project_id,
        created_at=now(),
        step_number=step_number,
        fine_tuned_model_checkpoint=name,
        metrics={"step": step_number, **dict(metrics)},
        location=location,
    )
    session.add(checkpoint)
    await session.flush()
    older = list(
        (
            await session.exec(
                select(Checkpoint)
                .where(Checkpoint.job_id == job.id)
                .order_by(col(Checkpoint.pk).desc())
                .offset(CHECKPOINTS_KEPT)
            )
        ).all()
    )
    for row in older:
        await session.delete(row)
    await append_event(
        session, job, f"Checkpoint created at step {step_number} with Snapshot ID: {name}"
    )
    await session.commit()
    return checkpoint, [row.location for row in older if row.location]


async def succeed_job(
    *,
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    organization: str,
    trained_tokens: int,
    result_files: list[str],
    location: str | None = None,
) -> Job:
    """Finish the held job: record its fine-tuned model and mark it succeeded."""
    job = await _held(session, job_id, worker_id)
    name = model_name(job.base_model, organization, job.suffix)
    await _add_model(session, job, name, location)
    await append_event(session, job, f"New fine-tuned model created: {name}")
    await transition(
        session,
        job,
        "succeeded",
        fine_tuned_model=name,
        trained_tokens=trained_tokens,
        result_files=result_files,
    )
    await session.commit()
    return job


async def fail_job(
    *,
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    code: str,
    message: str,
    param: str | None = None,
) -> Job:
    """Mark the held job failed with OpenAI's `error` object."""
    job = await _held(session, job_id, worker_id)
    await transition(
        session,
        job,
        "failed",
        message=f"Fine-tuning job failed: {message}",
        level="error",
        error={"code": code, "message": message, "param": param},
    )
    await session.commit()
    return job


async def release_job(*, session: AsyncSession, job_id: str, worker_id: str) -> None:
    """Give the job back after a clean stop (paused, cancelled); clears the crash count."""
    await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.lease_owner) == worker_id)
        .values(lease_owner=None, lease_expires_at=None, attempts=0)
    )
    await session.commit()


async def abandon_job(*, session: AsyncSession, job_id: str, worker_id: str) -> None:
    """Hand a running job back when the worker shuts down: its lease expires now."""
    # Not a crash: the attempt count is cleared, and the next claim resumes the job.
    await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.lease_owner) == worker_id)
        .values(lease_expires_at=0.0, attempts=0)
    )
    await session.commit()


async def last_logged_step(*, session: AsyncSession, job_id: str) -> int:
    """Return the highest step with a metrics event (0 before the first)."""
    rows = await session.exec(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        .order_by(col(JobEvent.seq).desc())
        .limit(1)
    )
    data = rows.first()
    return int(data["step"]) if data else 0


# ---------------------------------------------------------------- engines that run jobs elsewhere


@dataclass(frozen=True)
class RemoteEvent:
    """An event of the job's log where it runs, with that side's id and time."""

    source_id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class RemoteCheckpoint:
    """A checkpoint where the job runs; its name is usable as a model here too."""

    name: str
    step_number: int
    metrics: dict[str, Any]
    created_at: int


@dataclass(frozen=True)
class RemoteState:
    """What an engine saw of a job where it runs, to be mirrored here in one transaction.

    `events` may repeat ones already stored (matched by `source_id`); `checkpoints`, when
    given, is the whole list there (None: not looked at this time).
    """

    status: str
    events: Sequence[RemoteEvent] = ()
    checkpoints: Sequence[RemoteCheckpoint] | None = None
    hyperparameters: Mapping[str, Any] | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result_files: Sequence[str] = ()
    error: dict[str, Any] | None = None
    estimated_finish: int | None = None


@dataclass(frozen=True)
class Mirrored:
    """What a mirror pass changed here."""

    events: int
    checkpoints: int
    status: str


async def acquire_job(
    *, session: AsyncSession, job_id: str, worker_id: str, lease_seconds: float
) -> bool:
    """Take (or keep) the job's lease for one pass; False when another worker holds it."""
    t = time.time()
    free = or_(
        col(Job.lease_owner).is_(None),
        col(Job.lease_owner) == worker_id,
        col(Job.lease_expires_at) < t,
    )
    result = await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, free)
        .values(lease_owner=worker_id, lease_expires_at=t + lease_seconds)
    )
    await session.commit()
    return result.rowcount == 1


async def mirror_job(
    *,
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    state: RemoteState,
    location: str | None,
) -> Mirrored:
    """Bring the held job up to `state`: new events and checkpoints once each, then its status
    along the allowed transitions (silently: the events say it), its model and results.

    A status the table cannot reach (the job was cancelled here while the provider still ran
    it) is left as it is. Reaching a final status frees the lease, as for every engine.
    """
    await lock_event_log(session)  # before any job row lock, as every event writer
    job = await _held(session, job_id, worker_id)
    wanted = {e.source_id: e for e in state.events}
    known = set(
        (
            await session.exec(
                select(JobEvent.source_id).where(
                    JobEvent.job_id == job_id, col(JobEvent.source_id).in_(list(wanted))
                )
            )
        ).all()
    )
    added = 0
    for source_id, event in wanted.items():
        if source_id in known:
            continue
        await _append_remote(session, job, event)
        added += 1
    new_checkpoints = 0
    if state.checkpoints is not None:
        new_checkpoints = await _mirror_checkpoints(session, job, state.checkpoints, location)
    values: dict[str, Any] = {}
    if state.hyperparameters:
        method = dict(job.method)
        config = dict(method.get(method["type"]) or {})
        config["hyperparameters"] = {**config.get("hyperparameters", {}), **state.hyperparameters}
        method[method["type"]] = config
        if method != job.method:
            values["method"] = method
    if state.estimated_finish is not None and not states.is_terminal(job.status):
        values["estimated_finish"] = state.estimated_finish
    if values:
        await session.exec(update(Job).where(col(Job.id) == job_id).values(**values))
        for name, value in values.items():
            setattr(job, name, value)
    route = states.path(job.status, state.status) or []
    for step in route:
        final: dict[str, Any] = {}
        if step == "succeeded":
            final = {
                "fine_tuned_model": state.fine_tuned_model,
                "trained_tokens": state.trained_tokens,
                "result_files": list(state.result_files),
            }
            if state.fine_tuned_model is not None:
                await _add_model(session, job, state.fine_tuned_model, location)
        elif step == "failed":
            final = {"error": state.error, "trained_tokens": state.trained_tokens}
        await transition(session, job, step, announce=False, **final)
    await session.commit()
    return Mirrored(events=added, checkpoints=new_checkpoints, status=job.status)


async def _append_remote(session: AsyncSession, job: Job, event: RemoteEvent) -> None:
    """Add a provider's event to the job's log, with its id and time there."""
    await append_event(
        session,
        job,
        event.message,
        level=event.level,
        type=event.type,
        data=event.data,
        source_id=event.source_id,
        created_at=event.created_at,
    )


async def _mirror_checkpoints(
    session: AsyncSession, job: Job, seen: Sequence[RemoteCheckpoint], location: str | None
) -> int:
    rows = {
        row.fine_tuned_model_checkpoint: row
        for row in (await session.exec(select(Checkpoint).where(Checkpoint.job_id == job.id))).all()
    }
    names = {c.name for c in seen}
    for name, row in rows.items():
        if name not in names:  # no longer kept where the job runs
            await session.delete(row)
    added = 0
    for checkpoint in sorted(seen, key=lambda c: c.step_number):
        if checkpoint.name in rows:
            continue
        session.add(
            Checkpoint(
                id=new_id("ftckpt_"),
                job_id=job.id,
                project_id=job.project_id,
                created_at=checkpoint.created_at,
                step_number=checkpoint.step_number,
                fine_tuned_model_checkpoint=checkpoint.name,
                metrics={"step": checkpoint.step_number, **checkpoint.metrics},
                location=location,
            )
        )
        added += 1
    await session.flush()
    return added


async def _add_model(session: AsyncSession, job: Job, name: str, location: str | None) -> None:
    """Record the job's fine-tuned model, unless a report seen twice recorded it already."""
    exists = (
        await session.exec(select(FineTunedModel.id).where(FineTunedModel.id == name))
    ).first()
    if exists is None:
        session.add(
            FineTunedModel(
                id=name,
                project_id=job.project_id,
                job_id=job.id,
                base_model=job.base_model,
                created_at=now(),
                owned_by=job.organization_id,
                location=location,
            )
        )


async def release_lease(*, session: AsyncSession, job_id: str, worker_id: str) -> None:
    """Let go of the job's lease after a pass, so that any worker may take the next one."""
    await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.lease_owner) == worker_id)
        .values(lease_owner=None, lease_expires_at=None)
    )
    await session.commit()


async def note(
    *, session: AsyncSession, job_id: str, worker_id: str, message: str, level: str = "info"
) -> None:
    """Log an event of the engine's own on the held job (an outage where it runs, say)."""
    await lock_event_log(session)
    job = await _held(session, job_id, worker_id)
    await append_event(session, job, message, level=level)
    await session.commit()


@dataclass(frozen=True)
class ImportedJob:
    """A job as a provider holds it, to be recorded here as it is: its whole history, once."""

    project_id: str
    engine: str
    organization_id: str
    created_at: int
    model: str
    base_model: str
    status: str
    method: dict[str, Any]
    seed: int
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    result_files: Sequence[str] = ()
    error: dict[str, Any] | None = None
    events: Sequence[RemoteEvent] = ()
    checkpoints: Sequence[RemoteCheckpoint] = ()


async def import_job(
    *,
    session: AsyncSession,
    imported: ImportedJob,
    location: str,
    with_rows: Callable[[str], Sequence[SQLModel]],
    note: str | None = None,
) -> Job:
    """Record a job brought in from a provider, with its events, checkpoints and model, in one
    transaction with the engine's own rows (`with_rows(job_id)`); nothing of it is half-written."""
    await lock_event_log(session)
    t = now()
    job = Job(
        id=new_id("ftjob-"),
        project_id=imported.project_id,
        created_at=imported.created_at,
        updated_at=t,
        model=imported.model,
        base_model=imported.base_model,
        engine=imported.engine,
        organization_id=imported.organization_id,
        training_file=imported.training_file,
        validation_file=imported.validation_file,
        status=imported.status,
        method=imported.method,
        seed=imported.seed,
        suffix=imported.suffix,
        metadata_=imported.metadata,
        integrations=imported.integrations,
        error=imported.error,
        fine_tuned_model=imported.fine_tuned_model,
        finished_at=imported.finished_at,
        trained_tokens=imported.trained_tokens,
        result_files=list(imported.result_files),
    )
    session.add(job)
    await session.flush()
    for event in imported.events:
        await _append_remote(session, job, event)
    if note:
        await append_event(session, job, note)
    await _mirror_checkpoints(session, job, imported.checkpoints, location)
    if imported.status == "succeeded" and imported.fine_tuned_model:
        await _add_model(session, job, imported.fine_tuned_model, location)
    await session.flush()
    session.add_all(with_rows(job.id))
    await session.commit()
    return job
