"""Tables of the email studio: a project's studio settings and the datasets built from history."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.files import models as _files  # noqa: F401  (foreign-key target)
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class StudioSettings(SQLModel, table=True):
    """A project's choices for the studio; a project without a row has the defaults."""

    __tablename__ = "studio_settings"

    pk: int | None = Field(default=None, sa_column=pk_column())
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", unique=True)
    # {department: {language: prompt}} and {language: template}, over the seed's defaults.
    system_prompts: dict[str, Any] = Field(
        default_factory=dict, sa_column=json_column("system_prompts", nullable=False)
    )
    user_templates: dict[str, Any] = Field(
        default_factory=dict, sa_column=json_column("user_templates", nullable=False)
    )
    # Off only for projects that train locally: their datasets may not leave the machine.
    redact: bool = True
    updated_at: int


class EmailDataset(SQLModel, table=True):
    """A dataset built from e-mail history: its files, the options it was built with, its report."""

    __tablename__ = "email_datasets"
    __table_args__ = (sa.Index("ix_email_datasets_project_pk", "project_id", "pk"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    created_at: int
    # "supervised" (chat examples from history) or "dpo" (preference pairs).
    method: str = Field(default="supervised", max_length=20)
    training_file: str = Field(foreign_key="files.id", ondelete="CASCADE")
    validation_file: str | None = Field(default=None, foreign_key="files.id", ondelete="SET NULL")
    department: str | None = Field(default=None, max_length=100)
    user_id: str | None = Field(default=None, max_length=200)
    redacted: bool = True
    options: dict[str, Any] = Field(sa_column=json_column("options", nullable=False))
    report: dict[str, Any] = Field(sa_column=json_column("report", nullable=False))
