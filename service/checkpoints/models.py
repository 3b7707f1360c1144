"""Tables for job checkpoints and checkpoint permissions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.jobs import models as _jobs  # noqa: F401  (foreign-key target)
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class Checkpoint(SQLModel, table=True):
    """A snapshot taken at the end of an epoch; its name is usable as a model."""

    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (sa.Index("ix_checkpoints_job_pk", "job_id", "pk"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", ondelete="CASCADE")
    project_id: str = Field(max_length=40, index=True)
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str = Field(max_length=300, unique=True, index=True)
    metrics: dict[str, Any] = Field(
        default_factory=dict, sa_column=json_column("metrics", nullable=False)
    )
    # Where the engine keeps the checkpoint's weights (an adapter folder, an upstream id).
    location: str | None = None


class CheckpointPermission(SQLModel, table=True):
    """A grant letting another project use a fine-tuned model or checkpoint by name."""

    __tablename__ = "checkpoint_permissions"
    __table_args__ = (
        sa.UniqueConstraint("model_name", "project_id", name="uq_permissions_model_project"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    model_name: str = Field(max_length=300, index=True)
    owner_project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    created_at: int
