"""Wire shapes of model exports (an extension): the export object and its events."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.exports.models import ModelExport, ModelExportEvent
from service.pagination import ListPage
from service.wire import WireModel

ExportFormat = Literal["adapter", "merged", "gguf"]


class ExportObject(WireModel):
    """Where an export stands; once `ready`, `GET /v1/models/{model}/export` sends it."""

    id: str = Field(examples=["export-abc123"])
    object: Literal["model.export"] = "model.export"
    model: str
    format: ExportFormat
    status: Literal["queued", "building", "ready", "failed"]
    progress: float = Field(description="From 0 to 1.")
    filename: str
    bytes: int | None = Field(description="The archive's size, once ready.")
    sha256: str | None = Field(description="The archive's SHA-256 (also its ETag), once ready.")
    error: str | None
    created_at: int
    finished_at: int | None

    @classmethod
    def from_row(cls, row: ModelExport) -> ExportObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            model=row.model,
            format=row.format,
            status=row.status,
            progress=row.progress,
            filename=row.filename,
            bytes=row.bytes,
            sha256=row.sha256,
            error=row.error,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


class ExportList(ListPage[ExportObject]):
    """The exports of a model, one per format."""


class ExportEventObject(WireModel):
    """One step of an export, shaped like a fine-tuning job's event."""

    id: str
    object: Literal["model.export.event"] = "model.export.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, float]

    @classmethod
    def from_row(cls, row: ModelExportEvent) -> ExportEventObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            created_at=row.created_at,
            level=row.level,
            message=row.message,
            type="metrics" if row.data else "message",
            data=row.data or {},
        )


class ExportEventList(ListPage[ExportEventObject]):
    """A page of an export's events, newest first."""
