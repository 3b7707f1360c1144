"""Tables of multipart uploads (`/v1/uploads`): an upload and the parts received for it."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class Upload(SQLModel, table=True):
    """A file being sent in parts; `file_id` names the file it became once completed."""

    __tablename__ = "uploads"
    __table_args__ = (sa.Index("ix_uploads_status_expires", "status", "expires_at"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    created_at: int
    expires_at: int
    bytes: int = Field(sa_type=sa.BigInteger)
    filename: str = Field(max_length=255)
    purpose: str = Field(max_length=40)
    mime_type: str = Field(max_length=255)
    status: str = Field(max_length=20)  # pending, completed, cancelled, expired
    file_id: str | None = Field(default=None, max_length=40)
    # The expiry the completed file gets, in seconds after its creation (expires_after).
    file_expires_after: int | None = None


class UploadPart(SQLModel, table=True):
    """One part of an upload; its bytes live under the data folder's `uploads/<upload id>/`."""

    __tablename__ = "upload_parts"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    upload_id: str = Field(foreign_key="uploads.id", ondelete="CASCADE", index=True)
    created_at: int
    bytes: int = Field(sa_type=sa.BigInteger)
