"""Rules for fine-tuning jobs: creation, status changes, events, and the calls engines make.

Every status change goes through `_transition`, which checks the table in `states.py` and
updates the row with a compare-and-set on the old status, so a client's cancel and an engine's
report can never both win. Each change appends an event in the same transaction.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.checkpoints.models import Checkpoint
from service.errors import Conflict, InvalidRequest, NotFound
from service.files.models import File
from service.files.service import check_file, get_file
from service.ids import new_id, now, random_base62
from service.jobs import states
from service.jobs.models import Job, JobEvent
from service.jobs.schemas import (
    DpoHyperparameters,
    JobCreate,
    MethodRequest,
    ReinforcementHyperparameters,
    SupervisedHyperparameters,
)
from service.models.models import FineTunedModel
from service.models.registry import Method, ModelRegistry, ensure_supports
from service.models.service import Trainable, resolve_trainable
from service.pagination import page
from service.settings import Settings
from service.training_data.report import METHOD_FORMATS

CHECKPOINTS_KEPT = 3
HYPERPARAMETER_DEFAULTS: dict[str, type[SupervisedHyperparameters]] = {
    "supervised": SupervisedHyperparameters,
    "dpo": DpoHyperparameters,
    "reinforcement": ReinforcementHyperparameters,
}


class LeaseLost(Conflict):
    """The worker no longer holds the job (it expired, or the job was taken over)."""


class ConcurrentUpdate(Conflict):
    """The job's status changed between reading and writing it."""


class IllegalTransition(InvalidRequest):
    """The status table does not allow this change."""


# ---------------------------------------------------------------- events and transitions


async def append_event(
    session: AsyncSession,
    job: Job,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Add an event to the job's log with the next sequence number (not committed)."""
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
        created_at=now(),
        level=level,
        message=message,
        type=type,
        data=data,
    )
    session.add(event)
    return event


async def _transition(
    session: AsyncSession,
    job: Job,
    target: str,
    *,
    message: str | None = None,
    level: str = "info",
    **fields: Any,
) -> None:
    """Move the job to `target` if the status table allows it, and log it (not committed)."""
    if not states.is_allowed(job.status, target):
        raise IllegalTransition(
            f"Fine-tuning job {job.id} cannot move from '{job.status}' to '{target}'.",
            code="invalid_status_transition",
        )
    values: dict[str, Any] = {"status": target, "updated_at": now(), **fields}
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
    if text:
        await append_event(session, job, text, level=level)


# ---------------------------------------------------------------- creation


@dataclass(frozen=True)
class _Files:
    training: File
    validation: File | None


def _normalised_method(body: JobCreate) -> dict[str, Any]:
    method = body.method
    if method is None:
        method = MethodRequest.model_validate(
            {"type": "supervised", "supervised": {"hyperparameters": body.hyperparameters}}
            if body.hyperparameters is not None
            else {"type": "supervised"}
        )
    elif body.hyperparameters is not None:
        raise InvalidRequest(
            "Set hyperparameters in method.<type>.hyperparameters, not at the top level, "
            "when method is given.",
            param="hyperparameters",
            code="invalid_value",
        )
    data = method.model_dump(mode="json", exclude_none=True)
    config = data.setdefault(method.type, {})
    defaults = HYPERPARAMETER_DEFAULTS[method.type]().model_dump(mode="json")
    config["hyperparameters"] = {**defaults, **config.get("hyperparameters", {})}
    return data


async def _training_files(
    session: AsyncSession, project_id: str, body: JobCreate, method: Method
) -> _Files:
    async def load(file_id: str, param: str) -> File:
        try:
            row = await get_file(session=session, project_id=project_id, file_id=file_id)
        except NotFound:
            raise InvalidRequest(
                f"File {file_id} not found.", param=param, code="file_not_found"
            ) from None
        if row.purpose != "fine-tune":
            raise InvalidRequest(
                f"File {file_id} has purpose '{row.purpose}'; it must be 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )
        expected = METHOD_FORMATS[method]
        if row.format != expected:
            raise InvalidRequest(
                f"File {file_id} holds {row.format or 'unknown'}-format examples, but method "
                f"'{method}' needs {expected}-format examples.",
                param=param,
                code="invalid_format_for_method",
            )
        return row

    training = await load(body.training_file, "training_file")
    validation = (
        await load(body.validation_file, "validation_file") if body.validation_file else None
    )
    return _Files(training=training, validation=validation)


async def _validate_contents(
    session: AsyncSession, files: _Files, trainable: Trainable, method: str, settings: Settings
) -> None:
    for row, param in ((files.training, "training_file"), (files.validation, "validation_file")):
        if row is None:
            continue
        report = await check_file(
            session=session,
            row=row,
            files_dir=settings.files_dir,
            method=method,  # type: ignore[arg-type]
            base=trainable.base,
            n_epochs=None,
        )
        if not report.valid:
            first = report.errors[0]
            raise InvalidRequest(
                f"File {row.id} has {report.n_errors} error(s); first: {first.message} "
                f"POST /v1/files/{row.id}/check lists them all.",
                param=param,
                code=f"invalid_{param}",
            )


async def create_job(
    *,
    session: AsyncSession,
    project_id: str,
    body: JobCreate,
    registry: ModelRegistry,
    settings: Settings,
) -> Job:
    """Validate a job request and its files, then record the job as queued."""
    method = _normalised_method(body)
    kind = method["type"]
    trainable = await resolve_trainable(
        session=session, registry=registry, project_id=project_id, name=body.model
    )
    ensure_supports(trainable.base, kind, param="method.type")
    files = await _training_files(session, project_id, body, kind)
    await _validate_contents(session, files, trainable, kind, settings)

    created = now()
    job = Job(
        id=new_id("ftjob-"),
        project_id=project_id,
        created_at=created,
        updated_at=created,
        model=trainable.name,
        base_model=trainable.base.id,
        engine=trainable.base.engine,
        organization_id=settings.organization_id,
        training_file=files.training.id,
        validation_file=files.validation.id if files.validation else None,
        status="validating_files",
        method=method,
        seed=body.seed if body.seed is not None else secrets.randbelow(2_147_483_648),
        suffix=body.suffix,
        metadata_=body.metadata,
        integrations=[i.model_dump(mode="json") for i in body.integrations]
        if body.integrations
        else None,
    )
    session.add(job)
    await session.flush()
    await append_event(session, job, f"Created fine-tuning job: {job.id}")
    await append_event(session, job, f"Validating training file: {job.training_file}")
    if job.validation_file:
        await append_event(session, job, f"Validating validation file: {job.validation_file}")
    if job.integrations:
        await append_event(
            session,
            job,
            "Integrations are recorded for compatibility; this service does not send runs "
            "to Weights & Biases.",
            level="warn",
        )
    # Files were checked above (the check is cached per file, method and model).
    await _transition(session, job, "queued")
    await session.commit()
    return job


# ---------------------------------------------------------------- reading


async def get_job(*, session: AsyncSession, project_id: str, job_id: str) -> Job:
    """Return the project's job, or raise NotFound (also for other projects' jobs)."""
    job = (
        await session.exec(select(Job).where(Job.id == job_id, Job.project_id == project_id))
    ).first()
    if job is None:
        raise NotFound(f"Fine-tuning job {job_id} not found.", param="fine_tuning_job_id")
    return job


async def list_jobs(
    *,
    session: AsyncSession,
    project_id: str,
    after: str | None,
    limit: int,
    metadata: Mapping[str, str] | None,
    metadata_is_null: bool = False,
) -> tuple[list[Job], bool]:
    """Return a page of the project's jobs, newest first, optionally filtered by metadata."""
    where = [col(Job.project_id) == project_id]
    if metadata_is_null:
        where.append(col(Job.metadata_).is_(None))
    for key, value in (metadata or {}).items():
        where.append(col(Job.metadata_)[key].as_string() == value)
    return await page(session, Job, where=where, after=after, limit=limit)


async def list_events(
    *, session: AsyncSession, job: Job, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """Return a page of the job's events, newest first."""
    return await page(
        session, JobEvent, where=[col(JobEvent.job_id) == job.id], after=after, limit=limit
    )


async def list_checkpoints(
    *, session: AsyncSession, job: Job, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    """Return a page of the job's checkpoints, newest first."""
    return await page(
        session, Checkpoint, where=[col(Checkpoint.job_id) == job.id], after=after, limit=limit
    )


# ---------------------------------------------------------------- client controls


async def _reloaded(session: AsyncSession, job: Job) -> Job:
    await session.refresh(job)
    return job


async def _client_action(session: AsyncSession, job: Job, action: str) -> Job:
    rule = states.CLIENT_ACTIONS[action]
    for _ in range(3):
        if rule.idempotent and job.status == rule.target:
            return job
        if job.status not in rule.sources:
            raise InvalidRequest(
                f"Fine-tuning job {job.id} is {job.status}; it cannot be {action}d "
                f"(only a {' or '.join(sorted(rule.sources))} job can).",
                code=rule.refused_code,
            )
        try:
            await _transition(session, job, rule.target, message=rule.message)
        except ConcurrentUpdate:
            # Another request or the engine moved the job first: judge again on its new status.
            await session.rollback()
            await session.refresh(job)
            continue
        await session.commit()
        return await _reloaded(session, job)
    raise ConcurrentUpdate(f"Fine-tuning job {job.id} keeps changing; retry.")


async def cancel_job(*, session: AsyncSession, job: Job) -> Job:
    """Cancel a live job at once; cancelling a cancelled job answers it unchanged."""
    return await _client_action(session, job, "cancel")


async def pause_job(*, session: AsyncSession, job: Job) -> Job:
    """Pause a queued or running job; the engine stops at its next step with a checkpoint."""
    return await _client_action(session, job, "pause")


async def resume_job(*, session: AsyncSession, job: Job) -> Job:
    """Put a paused job back in the queue; it continues from its last checkpoint."""
    return await _client_action(session, job, "resume")


# ---------------------------------------------------------------- engine side


async def _held(session: AsyncSession, job_id: str, worker_id: str) -> Job:
    job = (await session.exec(select(Job).where(Job.id == job_id))).first()
    if job is None or job.lease_owner != worker_id:
        raise LeaseLost(f"Worker {worker_id} does not hold job {job_id}.", code="lease_lost")
    await session.refresh(job)
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
                await _transition(
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
            await _transition(session, job, "queued", message=states.REQUEUED_MESSAGE, level="warn")
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
) -> Job:
    """Mark the held job running and write back its resolved hyperparameters."""
    job = await _held(session, job_id, worker_id)
    method = dict(job.method)
    kind = method["type"]
    config = dict(method.get(kind) or {})
    config["hyperparameters"] = {**config.get("hyperparameters", {}), **hyperparameters}
    method[kind] = config
    await _transition(session, job, "running", method=method, estimated_finish=estimated_finish)
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
    job = await _held(session, job_id, worker_id)
    if job.status != "running":
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
    await append_event(session, job, f"New fine-tuned model created: {name}")
    await _transition(
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
    await _transition(
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
