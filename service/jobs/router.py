"""HTTP routes of fine-tuning jobs: `/v1/fine_tuning/jobs`."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from service.checkpoints.schemas import CheckpointList, CheckpointObject
from service.deps import CallerDep, EnginesDep, SessionDep, SettingsDep
from service.errors import InvalidRequest
from service.events.router import (
    LastEventIdHeader,
    StreamCallerDep,
    StreamQuery,
    TicketQuery,
    sse_response,
)
from service.events.service import Scope
from service.jobs import service
from service.jobs.models import Job
from service.jobs.schemas import (
    EventList,
    EventObject,
    JobCreate,
    JobList,
    JobObject,
    JobRerun,
    MetricsHistory,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["Fine-tuning"])

JobIdPath = Annotated[str, Path(description="The job's id.", examples=["ftjob-abc123"])]
_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


async def _owned_job(fine_tuning_job_id: JobIdPath, caller: CallerDep, session: SessionDep) -> Job:
    return await service.get_job(
        session=session, project_id=caller.project_id, job_id=fine_tuning_job_id
    )


JobDep = Annotated[Job, Depends(_owned_job)]


def _metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """Read `metadata[key]=value` pairs, or `metadata=null`, from the query string."""
    pairs: dict[str, str] = {}
    null = False
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            if value != "null":
                raise InvalidRequest(
                    "metadata must be 'null' or given as metadata[key]=value.", param="metadata"
                )
            null = True
        elif match := _METADATA_KEY.match(name):
            key = match.group(1)
            if '"' in key or "\\" in key:
                raise InvalidRequest(
                    "Metadata keys cannot contain quotes or backslashes.", param="metadata"
                )
            pairs[key] = value
        elif name.startswith("metadata"):  # metadata[, metadata[]: a filter gone wrong
            raise InvalidRequest(
                f"Invalid metadata filter '{name}': give metadata[key]=value or metadata=null.",
                param="metadata",
            )
    if null and pairs:
        raise InvalidRequest(
            "Use either metadata=null or metadata[key]=value, not both.", param="metadata"
        )
    return pairs, null


@router.post(
    "",
    operation_id="createFineTuningJob",
    summary="Create a fine-tuning job",
    response_model=JobObject,
)
async def create_fine_tuning_job(
    body: JobCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    engines: EnginesDep,
) -> JobObject:
    """Create a job that fine-tunes a model on a training file. The files are validated first
    (400 naming the file and its first bad line); the engine is chosen by the model."""
    job = await service.create_job(
        session=session,
        project_id=caller.project_id,
        body=body,
        engines=engines,
        settings=settings,
    )
    return JobObject.from_row(job)


@router.get(
    "",
    operation_id="listFineTuningJobs",
    summary="List fine-tuning jobs",
    response_model=JobList,
)
async def list_fine_tuning_jobs(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> JobList:
    """List the project's jobs, newest first; filter with `metadata[key]=value`."""
    metadata, metadata_is_null = _metadata_filter(request)
    rows, has_more = await service.list_jobs(
        session=session,
        project_id=caller.project_id,
        after=after,
        limit=limit,
        metadata=metadata,
        metadata_is_null=metadata_is_null,
    )
    return JobList.of([JobObject.from_row(r) for r in rows], has_more=has_more)


@router.get(
    "/{fine_tuning_job_id}",
    operation_id="retrieveFineTuningJob",
    summary="Retrieve a fine-tuning job",
    response_model=JobObject,
)
async def retrieve_fine_tuning_job(job: JobDep) -> JobObject:
    """Return a job."""
    return JobObject.from_row(job)


@router.post(
    "/{fine_tuning_job_id}/cancel",
    operation_id="cancelFineTuningJob",
    summary="Cancel a fine-tuning job",
    response_model=JobObject,
)
async def cancel_fine_tuning_job(
    job: JobDep, session: SessionDep, engines: EnginesDep
) -> JobObject:
    """Cancel a job at once; the engine stops within one training step."""
    return JobObject.from_row(await service.cancel_job(session=session, engines=engines, job=job))


@router.post(
    "/{fine_tuning_job_id}/pause",
    operation_id="pauseFineTuningJob",
    summary="Pause a fine-tuning job",
    response_model=JobObject,
)
async def pause_fine_tuning_job(job: JobDep, session: SessionDep, engines: EnginesDep) -> JobObject:
    """Pause a queued or running job; it keeps its progress for `resume`."""
    return JobObject.from_row(await service.pause_job(session=session, engines=engines, job=job))


@router.post(
    "/{fine_tuning_job_id}/resume",
    operation_id="resumeFineTuningJob",
    summary="Resume a paused fine-tuning job",
    response_model=JobObject,
)
async def resume_fine_tuning_job(
    job: JobDep, session: SessionDep, engines: EnginesDep
) -> JobObject:
    """Queue a paused job again; it continues from its last checkpoint."""
    return JobObject.from_row(await service.resume_job(session=session, engines=engines, job=job))


@router.post(
    "/{fine_tuning_job_id}/rerun",
    operation_id="rerunFineTuningJob",
    summary="Train a job's data again on another model (extension)",
    response_model=JobObject,
)
async def rerun_fine_tuning_job(
    job: JobDep,
    body: JobRerun,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    engines: EnginesDep,
) -> JobObject:
    """Create a job on `model` with this job's training and validation files, method,
    hyperparameters, suffix and seed; its metadata gains `rerun_of`. An extension: for jobs
    imported from a provider, re-trained here on an open-weight model."""
    created = await service.rerun_job(
        session=session,
        project_id=caller.project_id,
        job=job,
        model=body.model,
        engines=engines,
        settings=settings,
    )
    return JobObject.from_row(created)


@router.get(
    "/{fine_tuning_job_id}/events",
    operation_id="listFineTuningEvents",
    summary="List a job's events",
    response_model=EventList,
)
async def list_fine_tuning_events(
    request: Request,
    fine_tuning_job_id: JobIdPath,
    caller: StreamCallerDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: StreamQuery = False,
    ticket: TicketQuery = None,
    last_event_id: LastEventIdHeader = None,
) -> EventList | Response:
    """List a job's events, newest first. Their stream is `streamFineTuningEvents`."""
    if stream:  # the job is looked up in the caller's project as the stream starts
        scope = Scope(project_id=caller.project_id, job_id=fine_tuning_job_id)
        return await sse_response(request, scope, after, last_event_id)
    job = await _owned_job(fine_tuning_job_id, caller, session)
    rows, has_more = await service.list_events(session=session, job=job, after=after, limit=limit)
    return EventList.of([EventObject.from_row(r) for r in rows], has_more=has_more)


@router.get(
    "/{fine_tuning_job_id}/checkpoints",
    operation_id="listFineTuningJobCheckpoints",
    summary="List a job's checkpoints",
    response_model=CheckpointList,
)
async def list_fine_tuning_job_checkpoints(
    job: JobDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> CheckpointList:
    """List a job's checkpoints, newest first."""
    rows, has_more = await service.list_checkpoints(
        session=session, job=job, after=after, limit=limit
    )
    return CheckpointList.of([CheckpointObject.from_row(r) for r in rows], has_more=has_more)


@router.get(
    "/{fine_tuning_job_id}/metrics",
    operation_id="retrieveFineTuningJobMetrics",
    summary="Retrieve a job's metrics history (extension)",
    response_model=MetricsHistory,
)
async def retrieve_fine_tuning_job_metrics(
    job: JobDep,
    session: SessionDep,
    after_step: Annotated[
        int,
        Query(
            ge=0,
            le=2_147_483_647,
            description="Return only the steps after this one, to fetch what is new.",
        ),
    ] = 0,
) -> MetricsHistory:
    """Return the job's step metrics, by step ascending, also after the job has ended.

    An extension, not in OpenAI's API: the same numbers as the `metrics` events, as one series.
    """
    events, total_steps = await service.metrics_history(
        session=session, job=job, after_step=after_step
    )
    return MetricsHistory.of(job.id, events, total_steps=total_steps)
