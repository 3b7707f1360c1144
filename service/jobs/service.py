"""Rules for fine-tuning jobs as clients see them: creation, reading, cancel, pause, resume."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.checkpoints.models import Checkpoint
from service.engines.base import ClientAction, Engine, Engines
from service.errors import InvalidRequest, NotFound
from service.files.models import File
from service.files.service import check_file, get_file
from service.ids import new_id, now
from service.jobs import states
from service.jobs.lifecycle import ConcurrentUpdate, append_event, transition
from service.jobs.models import Job, JobEvent
from service.jobs.schemas import (
    DpoHyperparameters,
    JobCreate,
    MethodRequest,
    ReinforcementHyperparameters,
    SupervisedHyperparameters,
)
from service.models import pricing
from service.models.registry import BaseModelSpec, Method, ensure_supports
from service.models.service import Trainable, resolve_trainable
from service.pagination import page
from service.projects.service import get_project
from service.settings import Settings
from service.training_data.report import METHOD_FORMATS, CheckReport

HYPERPARAMETER_DEFAULTS: dict[str, type[SupervisedHyperparameters]] = {
    "supervised": SupervisedHyperparameters,
    "dpo": DpoHyperparameters,
    "reinforcement": ReinforcementHyperparameters,
}


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


def _keep_personal_data_local(files: _Files, engine: Engine) -> None:
    """Refuse to send unredacted training data to an engine that trains elsewhere."""
    for row, param in ((files.training, "training_file"), (files.validation, "validation_file")):
        if row is not None and row.personal_data and not engine.keeps_data_local:
            raise InvalidRequest(
                f"File {row.id} holds personal data that was not redacted; it can only train "
                "models on this deployment's own engine. Build the dataset with redaction on "
                "to train elsewhere.",
                param=param,
                code="personal_data_not_redacted",
            )


async def _validate_contents(
    session: AsyncSession, files: _Files, trainable: Trainable, method: str, settings: Settings
) -> CheckReport:
    """Check both files for the job; return the training file's report."""
    reports = []
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
        reports.append(report)
    return reports[0]


def _estimate(report: CheckReport, base: BaseModelSpec, method: dict[str, Any]) -> dict[str, Any]:
    """Return what the job is expected to cost (or take, on a local engine)."""
    epochs = method.get(method["type"], {}).get("hyperparameters", {}).get("n_epochs", "auto")
    if isinstance(epochs, int) and epochs != report.n_epochs:
        report = report.with_epochs(epochs, price_per_million=base.training_price_per_million)
    return pricing.estimate(
        report.billed_tokens,
        price_per_million=base.training_price_per_million,
        parameters=base.parameters,
    )


async def _ensure_within_budget(
    session: AsyncSession, project_id: str, estimate: dict[str, Any]
) -> None:
    """Refuse a job whose highest estimate exceeds what is left of the project's budget."""
    project = await get_project(session=session, project_id=project_id)
    cost = estimate["cost_usd"]
    if project.budget_usd is None or cost is None:
        return
    spent = await committed_spend(session=session, project_id=project_id)
    left = project.budget_usd - spent
    if cost["high"] > left:
        raise InvalidRequest(
            f"This job is estimated to cost ${cost['low']:.2f} to ${cost['high']:.2f}, but only "
            f"${max(left, 0):.2f} of the project's ${project.budget_usd:.2f} budget is left "
            f"(${spent:.2f} spent or committed to unfinished jobs). Raise the budget or train "
            "on fewer tokens (fewer examples or epochs).",
            param="training_file",
            code="budget_exceeded",
        )


async def committed_spend(*, session: AsyncSession, project_id: str) -> float:
    """Return the project's training cost: finished jobs' cost, unfinished ones' high estimate."""
    rows = await session.exec(
        select(Job.status, Job.cost_usd, Job.estimate).where(Job.project_id == project_id)
    )
    spent = 0.0
    for status, cost, estimate in rows:
        if cost is not None:
            spent += cost
        elif not states.is_terminal(status) and estimate and estimate.get("cost_usd"):
            spent += float(estimate["cost_usd"]["high"])
    return spent


async def create_job(
    *,
    session: AsyncSession,
    project_id: str,
    body: JobCreate,
    engines: Engines,
    settings: Settings,
) -> Job:
    """Validate a job request and its files, then record the job as queued."""
    method = _normalised_method(body)
    kind = method["type"]
    trainable = await resolve_trainable(
        session=session, registry=engines.registry, project_id=project_id, name=body.model
    )
    ensure_supports(trainable.base, kind, param="method.type")
    engine = engines.serving(trainable.base.engine, model=body.model)
    engine.check_job(base=trainable.base, method=method)
    files = await _training_files(session, project_id, body, kind)
    _keep_personal_data_local(files, engine)
    report = await _validate_contents(session, files, trainable, kind, settings)
    estimate = _estimate(report, trainable.base, method)
    await _ensure_within_budget(session, project_id, estimate)

    created = now()
    job = Job(
        id=new_id("ftjob-"),
        project_id=project_id,
        created_at=created,
        updated_at=created,
        model=trainable.name,
        base_model=trainable.base.id,
        engine=engine.name,
        organization_id=settings.organization_id,
        training_file=files.training.id,
        validation_file=files.validation.id if files.validation else None,
        status="validating_files",
        method=method,
        estimate=estimate,
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
    if warning := trainable.base.retirement_warning():
        await append_event(
            session,
            job,
            f"{warning} Keep a record of what the fine-tuned model writes, and re-train it on "
            "an open-weight model.",
            level="warn",
        )
    # Files were checked above (the check is cached per file, method and model).
    await transition(session, job, "queued")
    await session.commit()
    return job


async def rerun_job(
    *,
    session: AsyncSession,
    project_id: str,
    job: Job,
    model: str,
    engines: Engines,
    settings: Settings,
) -> Job:
    """Create a job on `model` with another job's data, method, hyperparameters, suffix and
    seed (an extension): to train again, here, what a provider trained."""
    kind = job.method.get("type", "supervised")
    try:
        method = MethodRequest.model_validate(
            {"type": kind, kind: _known_fields(kind, job.method.get(kind) or {})}
        )
    except ValueError as error:
        raise InvalidRequest(
            f"The method of job {job.id} cannot be run again here: {error}",
            param="fine_tuning_job_id",
            code="method_not_supported",
        ) from None
    metadata = dict(job.metadata_ or {})
    if len(metadata) < 16:
        metadata["rerun_of"] = job.id
    body = JobCreate(
        model=model,
        training_file=job.training_file,
        validation_file=job.validation_file,
        method=method,
        suffix=job.suffix,
        seed=job.seed,
        metadata=metadata,
    )
    return await create_job(
        session=session, project_id=project_id, body=body, engines=engines, settings=settings
    )


def _known_fields(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A method configuration as a provider reports it, without what a request cannot carry
    (provider extras, hyperparameters left null)."""
    allowed = HYPERPARAMETER_DEFAULTS[kind].model_fields
    hyper = {
        k: v
        for k, v in (config.get("hyperparameters") or {}).items()
        if k in allowed and v is not None
    }
    kept: dict[str, Any] = {"hyperparameters": hyper}
    if kind == "reinforcement" and config.get("grader") is not None:
        kept["grader"] = config["grader"]
    return kept


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


async def _client_action(
    session: AsyncSession, engines: Engines, job: Job, action: ClientAction
) -> Job:
    rule = states.CLIENT_ACTIONS[action]
    told_engine = engine_logs = False
    for _ in range(3):
        # Once the engine was told, the status may already be its doing: a mirror of the
        # provider's job can record the change before this request does.
        if (rule.idempotent or told_engine) and job.status == rule.target:
            return job
        if job.status not in rule.sources:
            raise InvalidRequest(
                f"Fine-tuning job {job.id} is {job.status}; it cannot be {action}d "
                f"(only a {' or '.join(sorted(rule.sources))} job can).",
                code=rule.refused_code,
            )
        engine = engines.get(job.engine)
        if engine is not None and not told_engine:
            # Where the job runs hears of it first; no transaction is held meanwhile.
            await session.commit()
            engine_logs = await engine.control(job, action)
            told_engine = True
        try:
            await transition(
                session, job, rule.target, message=rule.message, announce=not engine_logs
            )
        except ConcurrentUpdate:
            # Another request or the engine moved the job first: judge again on its new status.
            await session.rollback()
            await session.refresh(job)
            continue
        await session.commit()
        return await _reloaded(session, job)
    raise ConcurrentUpdate(f"Fine-tuning job {job.id} keeps changing; retry.")


async def cancel_job(*, session: AsyncSession, engines: Engines, job: Job) -> Job:
    """Cancel a live job at once; cancelling a cancelled job answers it unchanged."""
    return await _client_action(session, engines, job, "cancel")


async def pause_job(*, session: AsyncSession, engines: Engines, job: Job) -> Job:
    """Pause a queued or running job; the engine stops at its next step with a checkpoint."""
    return await _client_action(session, engines, job, "pause")


async def resume_job(*, session: AsyncSession, engines: Engines, job: Job) -> Job:
    """Put a paused job back in the queue; it continues from its last checkpoint."""
    return await _client_action(session, engines, job, "resume")


# ---------------------------------------------------------------- metrics history (extension)


async def metrics_history(
    *, session: AsyncSession, job: Job, after_step: int
) -> tuple[list[JobEvent], int | None]:
    """Return the job's metrics events after `after_step` by step, and its total steps."""
    metrics = [col(JobEvent.job_id) == job.id, col(JobEvent.type) == "metrics"]
    # Compared as a float so that a step logged as 3.0 cannot break the cast on PostgreSQL.
    newer = col(JobEvent.data)["step"].as_float() > after_step
    rows = await session.exec(select(JobEvent).where(*metrics, newer).order_by(col(JobEvent.seq)))
    by_step: dict[int, JobEvent] = {}
    for event in rows.all():
        # A step logged twice (a run resumed before its last checkpoint) keeps its latest values.
        by_step[int((event.data or {})["step"])] = event
    # total_steps comes from the latest event, even when no step is newer than `after_step`.
    latest = (
        await session.exec(
            select(JobEvent.data).where(*metrics).order_by(col(JobEvent.seq).desc()).limit(1)
        )
    ).first()
    total = (latest or {}).get("total_steps")
    total_steps = total if isinstance(total, int) and not isinstance(total, bool) else None
    return [by_step[step] for step in sorted(by_step)], total_steps
