"""Wire shapes of the files API (OpenAI's `file` object and friends)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from service.files.models import File
from service.models.registry import Method
from service.pagination import ListPage
from service.training_data.formats import Format
from service.wire import RequestModel, WireModel, omitted

UPLOAD_FIELDS = frozenset({"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"})
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# Every purpose a file object may carry: the upload purposes and the platform's output purposes
# (OpenAIFile.purpose; `evals` is accepted on upload too).
FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]
# Purposes whose contents OpenAI refuses to hand back (reference §1.1).
NOT_DOWNLOADABLE = frozenset({"assistants", "user_data"})


class FileObject(WireModel):
    """OpenAI's `file` object, plus `sha256` and the detected training `format`."""

    id: str = Field(examples=["file-3wfAfDoYcGrSpaE17qK0vXT0"])
    object: Literal["file"] = "file"
    bytes: int = Field(description="Size of the content in bytes.")
    created_at: int = Field(description="Unix seconds.")
    expires_at: int | None = omitted(description="Unix seconds; only when set to expire.")
    filename: str
    purpose: FilePurpose = Field(examples=["fine-tune"])
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = omitted(description="Deprecated; only when there are any.")
    sha256: str = Field(description="Extension: SHA-256 of the content, hex.")
    format: Format | None = Field(
        default=None,
        description="Extension: training-data format detected at upload "
        "(`chat`, `preference` or `reinforcement`); null for other purposes.",
    )

    @classmethod
    def from_row(cls, row: File) -> FileObject:
        """Build the wire object from a table row."""
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            expires_at=row.expires_at,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,
            status_details=row.status_details,
            sha256=row.sha256,
            format=row.format,
        )


class FileDeleted(WireModel):
    """Answer to a file deletion."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class FileCheckRequest(RequestModel):
    """Body of `POST /v1/files/{file_id}/check`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"method": "supervised", "model": "gpt-4o-mini"}]},
    )

    method: Method = Field(description="Fine-tuning method the file is meant for.")
    model: str = Field(min_length=1, max_length=256, description="Base or fine-tuned model.")
    n_epochs: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=50,
        description="Epochs to bill; null applies the auto rule.",
    )


class FileList(ListPage[FileObject]):
    """A page of files; OpenAI's file list requires both ids as strings, empty on an empty page."""

    first_id: str = ""
    last_id: str = ""
