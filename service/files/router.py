"""HTTP routes of the files API: `/v1/files`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse

from service.deps import CallerDep, RegistryDep, SessionDep, SettingsDep
from service.errors import ErrorResponse
from service.files import service
from service.files.models import File
from service.files.schemas import FileCheckRequest, FileDeleted, FileList, FileObject
from service.files.upload import FILE_PART_SCHEMA, ReceivedUpload, receive_upload
from service.models.service import resolve_trainable
from service.training_data.report import CheckReport

router = APIRouter(prefix="/v1/files", tags=["Files"])

FileIdPath = Annotated[str, Path(description="The file's id.", examples=["file-abc123"])]


async def _received(request: Request, settings: SettingsDep) -> AsyncIterator[ReceivedUpload]:
    async for upload in receive_upload(
        request,
        tmp_dir=settings.files_dir / "tmp",
        max_bytes=settings.max_upload_bytes,
        idle_timeout=settings.upload_idle_timeout_seconds,
    ):
        yield upload


async def _owned_file(file_id: FileIdPath, caller: CallerDep, session: SessionDep) -> File:
    return await service.get_file(session=session, project_id=caller.project_id, file_id=file_id)


FileDep = Annotated[File, Depends(_owned_file)]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": FILE_PART_SCHEMA,
                        "purpose": {
                            "type": "string",
                            "enum": [
                                "assistants",
                                "batch",
                                "fine-tune",
                                "vision",
                                "user_data",
                                "evals",
                            ],
                        },
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": 3600,
                            "maximum": 2592000,
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    operation_id="createFile",
    summary="Upload a file",
    response_model=FileObject,
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"model": ErrorResponse, "description": "The file is over FT_MAX_UPLOAD_BYTES."}
    },
)
async def create_file(
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    upload: Annotated[ReceivedUpload, Depends(_received)],
) -> FileObject:
    """Upload a file. Training data (purpose `fine-tune`) is checked line by line as it streams:
    a line that is not UTF-8 JSON, not an object, or breaks the format's rules is refused with
    its line number, and nothing is stored."""
    row = await service.create_file(
        session=session, project_id=caller.project_id, files_dir=settings.files_dir, upload=upload
    )
    return FileObject.from_row(row)


@router.get("", operation_id="listFiles", summary="List files", response_model=FileList)
async def list_files(
    caller: CallerDep,
    session: SessionDep,
    purpose: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> FileList:
    """List the project's files, newest first unless `order=asc`."""
    rows, has_more = await service.list_files(
        session=session,
        project_id=caller.project_id,
        purpose=purpose,
        after=after,
        limit=limit,
        order=order,
    )
    return FileList.of([FileObject.from_row(r) for r in rows], has_more=has_more)


@router.get(
    "/{file_id}", operation_id="retrieveFile", summary="Retrieve a file", response_model=FileObject
)
async def retrieve_file(row: FileDep) -> FileObject:
    """Return a file's record."""
    return FileObject.from_row(row)


@router.delete(
    "/{file_id}", operation_id="deleteFile", summary="Delete a file", response_model=FileDeleted
)
async def delete_file(row: FileDep, session: SessionDep, settings: SettingsDep) -> FileDeleted:
    """Delete a file and its content."""
    await service.delete_file(session=session, row=row, files_dir=settings.files_dir)
    return FileDeleted(id=row.id)


@router.get(
    "/{file_id}/content",
    operation_id="downloadFile",
    summary="Retrieve file content",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "The file's bytes.",
        }
    },
)
async def download_file(row: FileDep, settings: SettingsDep) -> FileResponse:
    """Return the file's content as bytes."""
    path = service.downloadable_path(row, settings.files_dir)
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)


@router.post(
    "/{file_id}/check",
    operation_id="checkFile",
    summary="Check a training file (extension)",
    response_model=CheckReport,
)
async def check_file(
    row: FileDep,
    body: FileCheckRequest,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    registry: RegistryDep,
) -> CheckReport:
    """Validate a training file for a method and model with OpenAI's rules, and report counts,
    exact tokens per example, billed tokens for the epochs, warnings and every error's line."""
    base = await resolve_trainable(
        session=session, registry=registry, project_id=caller.project_id, name=body.model
    )
    return await service.check_file(
        session=session,
        row=row,
        files_dir=settings.files_dir,
        method=body.method,
        base=base.base,
        n_epochs=body.n_epochs,
    )
