"""Wire shapes of `/v1/uploads` (reference §2.2 and §3.2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.files.models import File
from service.files.schemas import FileObject
from service.uploads.models import Upload, UploadPart
from service.wire import RequestModel, WireModel

MAX_UPLOAD_BYTES = 8 * 1024**3  # 8 GB, as OpenAI's
MAX_PART_BYTES = 64 * 1024**2  # 64 MB a part
UPLOAD_TTL_SECONDS = 3600  # an upload expires an hour after its creation

UploadPurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


class ExpiresAfter(BaseModel):
    """When the completed file expires: `seconds` after its creation."""

    model_config = {"extra": "forbid"}

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class UploadCreate(RequestModel):
    """A file to send in parts: its size, name, type and purpose."""

    bytes: int = Field(ge=1, le=MAX_UPLOAD_BYTES, description="The whole file's size.")
    filename: str = Field(min_length=1, max_length=255)
    mime_type: str = Field(min_length=1, max_length=255, examples=["text/jsonl"])
    purpose: UploadPurpose
    expires_after: ExpiresAfter | None = None


class UploadComplete(RequestModel):
    """The parts, in the order they make the file, and optionally its MD5."""

    part_ids: list[str] = Field(min_length=1, max_length=10_000)
    md5: str | None = Field(
        default=None, max_length=64, description="Hex MD5 of the whole file, checked."
    )


class UploadObject(WireModel):
    """OpenAI's `upload` object; `file` once completed."""

    id: str = Field(examples=["upload_abc123"])
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: UploadPurpose
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None

    @classmethod
    def from_row(cls, row: Upload, file: File | None = None) -> UploadObject:
        """Build the wire object from its row (and its file's, once completed)."""
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            expires_at=row.expires_at,
            filename=row.filename,
            purpose=row.purpose,
            status="pending" if row.status == "completing" else row.status,
            file=FileObject.from_row(file) if file is not None else None,
        )


class UploadPartObject(WireModel):
    """OpenAI's `upload.part` object."""

    id: str = Field(examples=["part_def456"])
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

    @classmethod
    def from_row(cls, row: UploadPart) -> UploadPartObject:
        """Build the wire object from its row."""
        return cls(id=row.id, created_at=row.created_at, upload_id=row.upload_id)
