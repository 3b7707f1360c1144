"""HTTP routes of multipart uploads: `/v1/uploads` (OpenAI's, for files up to 8 GB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from service.deps import CallerDep, SessionDep, SettingsDep
from service.errors import ErrorResponse
from service.files.upload import FILE_PART_SCHEMA, ReceivedUpload, receive_upload
from service.uploads import service
from service.uploads.models import Upload
from service.uploads.schemas import (
    MAX_PART_BYTES,
    UploadComplete,
    UploadCreate,
    UploadObject,
    UploadPartObject,
)

router = APIRouter(prefix="/v1/uploads", tags=["Files"])

UploadIdPath = Annotated[str, Path(max_length=64, examples=["upload_abc123"])]


async def _owned_upload(upload_id: UploadIdPath, caller: CallerDep, session: SessionDep) -> Upload:
    return await service.get_upload(
        session=session, project_id=caller.project_id, upload_id=upload_id
    )


UploadDep = Annotated[Upload, Depends(_owned_upload)]


async def _received_part(request: Request, settings: SettingsDep) -> AsyncIterator[ReceivedUpload]:
    async for part in receive_upload(
        request,
        tmp_dir=settings.files_dir / "tmp",
        max_bytes=MAX_PART_BYTES,
        idle_timeout=settings.upload_idle_timeout_seconds,
        fields=frozenset({"data"}),
        file_field="data",
    ):
        yield part


_PART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": FILE_PART_SCHEMA},
                }
            }
        },
    }
}


@router.post(
    "", operation_id="createUpload", summary="Start an upload", response_model=UploadObject
)
async def create_upload(body: UploadCreate, caller: CallerDep, session: SessionDep) -> UploadObject:
    """Open an upload of `bytes` bytes (up to 8 GB); add parts within the hour, then complete
    it to get a file."""
    row = await service.create_upload(session=session, project_id=caller.project_id, body=body)
    return UploadObject.from_row(row)


@router.post(
    "/{upload_id}/parts",
    operation_id="addUploadPart",
    summary="Add a part to an upload",
    response_model=UploadPartObject,
    openapi_extra=_PART_BODY,
    responses={413: {"model": ErrorResponse, "description": "The part is over 64 MB."}},
)
async def add_upload_part(
    row: UploadDep,
    session: SessionDep,
    settings: SettingsDep,
    part: Annotated[ReceivedUpload, Depends(_received_part)],
) -> UploadPartObject:
    """Add one part (multipart field `data`, at most 64 MB), streamed to disk as it arrives.
    Parts may be sent in parallel; their order is given at completion."""
    added = await service.add_part(
        session=session, row=row, received=part, files_dir=settings.files_dir
    )
    return UploadPartObject.from_row(added)


@router.post(
    "/{upload_id}/complete",
    operation_id="completeUpload",
    summary="Complete an upload",
    response_model=UploadObject,
)
async def complete_upload(
    row: UploadDep, body: UploadComplete, session: SessionDep, settings: SettingsDep
) -> UploadObject:
    """Join the parts in the order of `part_ids` into a file: their bytes must add up to the
    upload's, `md5` (when given) must match, and training data gets the checks of an upload.
    The upload then holds the file."""
    file = await service.complete_upload(
        session=session, row=row, body=body, files_dir=settings.files_dir
    )
    return UploadObject.from_row(row, file)


@router.post(
    "/{upload_id}/cancel",
    operation_id="cancelUpload",
    summary="Cancel an upload",
    response_model=UploadObject,
)
async def cancel_upload(row: UploadDep, session: SessionDep, settings: SettingsDep) -> UploadObject:
    """Cancel a pending upload; its parts are removed."""
    row = await service.cancel_upload(session=session, row=row, files_dir=settings.files_dir)
    return UploadObject.from_row(row)
