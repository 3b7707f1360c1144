"""Tables of model exports: one archive per model and format, built once, and its progress log."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class ModelExport(SQLModel, table=True):
    """A model written in one format: built in the background, then kept and served."""

    __tablename__ = "model_exports"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "model", "format", name="uq_model_exports_model"),
        sa.Index("ix_model_exports_status", "status"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    model: str = Field(max_length=300)
    format: str = Field(max_length=20)
    status: str = Field(max_length=20)  # queued, building, ready, failed
    progress: float = 0.0
    filename: str = Field(max_length=400)
    bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    sha256: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, max_length=1000)
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    # The builder holding it renews this while it works; a crashed one's export is rebuilt.
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: float | None = None


class ModelExportEvent(SQLModel, table=True):
    """One line of an export's log, shaped like a fine-tuning job's events."""

    __tablename__ = "model_export_events"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    export_id: str = Field(foreign_key="model_exports.id", ondelete="CASCADE", index=True)
    created_at: int
    level: str = Field(max_length=10)
    message: str = Field(max_length=1000)
    data: dict[str, float] | None = Field(default=None, sa_column=json_column("data"))
