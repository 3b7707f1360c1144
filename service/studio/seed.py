"""The seed's Flask routes, as IAPosteManager's backend already calls them: `/api/fine-tuning/...`.

Their answers keep the seed's shapes: `{success: true, ...}`, and `{success: false, error}` with
the right status and a message meant for a person (never an exception's text). They authenticate
like every route (a project key) and run through the same files and jobs services as `/v1`.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.auth import authenticate
from service.deps import get_database, get_engines, get_settings
from service.errors import APIError, InvalidRequest
from service.files.service import Generated, create_generated_files, delete_file, get_file
from service.jobs import service as jobs
from service.jobs.schemas import JobCreate
from service.studio.datasets import MIN_EXAMPLES, jsonl
from service.wire import RequestModel

router = APIRouter(prefix="/api/fine-tuning", tags=["Email studio"])

# The seed's default model and suffix.
SEED_MODEL = "gpt-4o-mini"
SEED_SUFFIX = "email-model"


class SeedJobCreate(RequestModel):
    """The seed's request: inline examples, chat rows or {prompt, completion} pairs."""

    training_data: list[dict[str, Any]] = Field(max_length=50_000)
    model: str | None = Field(default=None, max_length=200)
    suffix: str | None = Field(default=None, max_length=64)


class SeedJobCreated(BaseModel):
    """The seed's answer to a created job."""

    success: bool = True
    job_id: str
    status: str
    training_file: str


class SeedJob(BaseModel):
    """The job fields the seed returns."""

    id: str
    status: str
    model: str
    fine_tuned_model: str | None
    created_at: int
    finished_at: int | None
    trained_tokens: int | None


class SeedJobRetrieved(BaseModel):
    """The seed's answer to a job lookup."""

    success: bool = True
    job: SeedJob


class SeedError(BaseModel):
    """The seed's error answer."""

    success: bool = False
    error: str


_SEED_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": SeedError, "description": description}
    for status, description in (
        (400, "Bad request: fewer than 10 examples, an unknown model, invalid examples."),
        (401, "No or a wrong API key."),
        (404, "No such job in the caller's project."),
    )
}


def _failure(error: APIError) -> JSONResponse:
    return JSONResponse(SeedError(error=error.message).model_dump(), status_code=error.status_code)


def _as_chat(example: dict[str, Any]) -> dict[str, Any]:
    """Return a {prompt, completion} pair (the seed's `createEmailModel` input) as a chat row."""
    if set(example) == {"prompt", "completion"}:
        return {
            "messages": [
                {"role": "user", "content": example["prompt"]},
                {"role": "assistant", "content": example["completion"]},
            ]
        }
    return example


def _default_model(request: Request) -> str:
    """Return the seed's default model where it is offered, else this deployment's first base."""
    registry = get_engines(request).registry
    if registry.resolve(SEED_MODEL) is not None:
        return SEED_MODEL
    trainable = [m for m in registry.all() if not m.is_closed_to_training()]
    return trainable[0].id if trainable else SEED_MODEL


@router.post(
    "/jobs",
    operation_id="seedCreateFineTuningJob",
    summary="Create a job from inline examples (the seed's route)",
    response_model=SeedJobCreated,
    responses=_SEED_ERRORS,
    # The body is parsed in the route so that even a malformed one gets the seed's error shape.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SeedJobCreate.model_json_schema()}},
        }
    },
)
async def seed_create_fine_tuning_job(request: Request) -> Any:
    """Turn at least 10 inline examples into a training file and start a job on it."""
    settings = get_settings(request)
    try:
        async with get_database(request).session() as session:
            caller = await authenticate(
                session=session, authorization=request.headers.get("authorization")
            )
            project_id = caller.project_id  # read now: a rollback below expires the caller's rows
            try:
                body = SeedJobCreate.model_validate_json(await request.body())
            except pydantic.ValidationError as error:
                detail = error.errors()[0]
                where = ".".join(str(p) for p in detail["loc"]) or "body"
                raise InvalidRequest(f"Invalid request: {where}: {detail['msg']}.") from None
            if len(body.training_data) < MIN_EXAMPLES:
                raise InvalidRequest(
                    f"Minimum {MIN_EXAMPLES} training examples required "
                    f"({len(body.training_data)} given)."
                )
            (file,) = await create_generated_files(
                session=session,
                project_id=project_id,
                files_dir=settings.files_dir,
                purpose="fine-tune",
                files=[
                    Generated("training_data.jsonl", jsonl(list(map(_as_chat, body.training_data))))
                ],
            )
            try:
                job = await jobs.create_job(
                    session=session,
                    project_id=project_id,
                    body=JobCreate(
                        model=body.model or _default_model(request),
                        training_file=file.id,
                        suffix=body.suffix or SEED_SUFFIX,
                    ),
                    engines=get_engines(request),
                    settings=settings,
                )
            except (APIError, pydantic.ValidationError):
                # No job, no file: the request leaves nothing behind.
                file_id = file.id
                await session.rollback()
                stored = await get_file(session=session, project_id=project_id, file_id=file_id)
                await delete_file(session=session, row=stored, files_dir=settings.files_dir)
                raise
    except pydantic.ValidationError as error:
        return _failure(InvalidRequest(f"Invalid request: {error.errors()[0]['msg']}."))
    except APIError as error:
        return _failure(error)
    return SeedJobCreated(job_id=job.id, status=job.status, training_file=file.id)


@router.get(
    "/jobs/{job_id}",
    operation_id="seedRetrieveFineTuningJob",
    summary="Retrieve a job (the seed's route)",
    response_model=SeedJobRetrieved,
    responses=_SEED_ERRORS,
)
async def seed_retrieve_fine_tuning_job(
    request: Request, job_id: Annotated[str, Path(max_length=64)]
) -> Any:
    """Return the seed's fields of one of the project's jobs."""
    try:
        async with get_database(request).session() as session:
            caller = await authenticate(
                session=session, authorization=request.headers.get("authorization")
            )
            row = await jobs.get_job(session=session, project_id=caller.project_id, job_id=job_id)
    except APIError as error:
        return _failure(error)
    return SeedJobRetrieved(
        job=SeedJob(
            id=row.id,
            status=row.status,
            model=row.model,
            fine_tuned_model=row.fine_tuned_model,
            created_at=row.created_at,
            finished_at=row.finished_at,
            trained_tokens=row.trained_tokens,
        )
    )
