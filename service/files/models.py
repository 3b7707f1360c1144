"""Tables for uploaded and generated files, and the cache of training-file checks."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class File(SQLModel, table=True):
    """A file's record; its content lives in the data folder under its id."""

    __tablename__ = "files"
    __table_args__ = (sa.Index("ix_files_project_pk", "project_id", "pk"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    bytes: int = Field(sa_type=sa.BigInteger)
    created_at: int
    expires_at: int | None = None
    filename: str = Field(max_length=255)
    purpose: str = Field(max_length=40)
    status: str = Field(default="processed", max_length=20)
    status_details: str | None = None
    sha256: str = Field(max_length=64)
    # Detected training-data format (chat, preference, reinforcement) for purpose fine-tune.
    format: str | None = Field(default=None, max_length=20)
    stats: dict[str, Any] | None = Field(default=None, sa_column=json_column("stats"))
    # Training data built without redaction: only engines that keep data local may train on it.
    personal_data: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class FileCheck(SQLModel, table=True):
    """A cached validation report of one file for one method and base model."""

    __tablename__ = "file_checks"
    __table_args__ = (sa.UniqueConstraint("file_id", "method", "model"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    file_id: str = Field(foreign_key="files.id", ondelete="CASCADE", index=True)
    method: str = Field(max_length=20)
    model: str = Field(max_length=200)
    created_at: int
    report: dict[str, Any] = Field(sa_column=json_column("report", nullable=False))
