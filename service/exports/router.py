"""HTTP routes of model exports (an extension): `/v1/models/{model}/export`, its list and log.

Included before the models router: `/v1/models/{model:path}` would otherwise take these paths.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import FileResponse, JSONResponse

from service.deps import CallerDep, EnginesDep, SessionDep, SettingsDep
from service.exports import service
from service.exports.schemas import (
    ExportEventList,
    ExportEventObject,
    ExportFormat,
    ExportList,
    ExportObject,
)

router = APIRouter(prefix="/v1/models", tags=["Models"])

ModelName = Annotated[
    str,
    Path(
        description="One of your fine-tuned models or checkpoints (names contain colons).",
        examples=["ft:smollm2-135m-instruct:personal:support:9o1eNNKO"],
    ),
]
FormatQuery = Annotated[
    ExportFormat,
    Query(
        description="`adapter`: the LoRA adapter (PEFT, vLLM `--lora-modules`); `merged`: a "
        "Hugging Face model folder; `gguf`: one GGUF file (Q8_0) and an Ollama Modelfile."
    ),
]
RETRY_AFTER_SECONDS = 2

_ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The archive (a tar file, named in Content-Disposition), once built; "
        "`Range` requests resume a download.",
        # octet-stream rather than application/x-tar: generated clients type it as bytes.
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    202: {
        "description": "Being built: the export object, with `Retry-After`.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportObject"}}},
    },
    206: {"description": "The asked range of the archive."},
}


@router.get(
    "/{model:path}/export",
    operation_id="exportModel",
    summary="Export a fine-tuned model (extension)",
    response_class=FileResponse,
    responses=_ARCHIVE,
)
async def export_model(
    model: ModelName,
    format: FormatQuery,
    caller: CallerDep,
    session: SessionDep,
    engines: EnginesDep,
    settings: SettingsDep,
) -> Response:
    """Download the model as an adapter, a merged model or GGUF. The first request starts a
    build in the background and answers 202 with its progress (also in
    `.../exports/{format}/events`); once built, the archive is kept and sent, with `Range`
    support and the SHA-256 as `ETag`. A model of another project answers 404."""
    derived = await service.exportable(
        session=session, engines=engines, project_id=caller.project_id, model=model, fmt=format
    )
    row = await service.request_export(
        session=session, files_dir=settings.files_dir, derived=derived, fmt=format
    )
    if row.status == "ready":
        return FileResponse(
            service.archive_path(settings.files_dir, row),
            media_type="application/octet-stream",
            filename=row.filename,
            headers={"ETag": f'"{row.sha256}"'},
        )
    # A new or requeued export woke the builder when it was committed (EXPORTS_TOPIC).
    return JSONResponse(
        ExportObject.from_row(row).model_dump(mode="json"),
        status_code=202,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@router.get(
    "/{model:path}/exports",
    operation_id="listModelExports",
    summary="List a model's exports (extension)",
    response_model=ExportList,
)
async def list_model_exports(
    model: ModelName, caller: CallerDep, session: SessionDep
) -> ExportList:
    """The formats asked for this model, with their status and progress."""
    rows = await service.list_exports(session=session, project_id=caller.project_id, model=model)
    return ExportList.of([ExportObject.from_row(r) for r in rows])


@router.get(
    "/{model:path}/exports/{format}/events",
    operation_id="listModelExportEvents",
    summary="List an export's events (extension)",
    response_model=ExportEventList,
)
async def list_model_export_events(
    model: ModelName,
    format: ExportFormat,
    caller: CallerDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ExportEventList:
    """The export's log, newest first, like a fine-tuning job's: queued, started, progress at
    each tenth (`data.progress`), ready or failed with the reason."""
    row = await service.get_export(
        session=session, project_id=caller.project_id, model=model, fmt=format
    )
    rows, has_more = await service.list_events(session=session, row=row, after=after, limit=limit)
    return ExportEventList.of([ExportEventObject.from_row(r) for r in rows], has_more=has_more)
