"""Tables for fine-tuned models produced by jobs, and the aliases that name the current one."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class FineTunedModel(SQLModel, table=True):
    """A model produced by a succeeded job, named `ft:<base>:<org>:<suffix>:<id8>`."""

    __tablename__ = "fine_tuned_models"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=300, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    job_id: str = Field(max_length=40, index=True)
    base_model: str = Field(max_length=200)
    created_at: int
    owned_by: str = Field(max_length=80)
    # Where the engine keeps the weights (an adapter folder, an upstream model id).
    location: str | None = None


class ModelAlias(SQLModel, table=True):
    """A stable name per scope (`email:department:sales`) for the model currently promoted."""

    __tablename__ = "model_aliases"
    __table_args__ = (sa.UniqueConstraint("project_id", "alias", name="uq_model_aliases_alias"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    alias: str = Field(max_length=200)
    model: str = Field(max_length=300)
    updated_at: int


class AliasChange(SQLModel, table=True):
    """One promotion or rollback of an alias: its history, newest last."""

    __tablename__ = "model_alias_changes"
    __table_args__ = (sa.Index("ix_model_alias_changes_alias", "project_id", "alias", "pk"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    alias: str = Field(max_length=200)
    action: str = Field(max_length=20)  # promote | rollback
    model: str = Field(max_length=300)
    previous_model: str | None = Field(default=None, max_length=300)
    reason: str | None = Field(default=None, max_length=1000)
    evaluation_id: str | None = Field(default=None, max_length=40)
    created_at: int


class AliasCompletion(SQLModel, table=True):
    """A completion answered through an alias, kept so that feedback can name it by its id."""

    __tablename__ = "alias_completions"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=60, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    scope: str = Field(max_length=120)
    model: str = Field(max_length=300)
    messages: list[dict[str, Any]] = Field(sa_column=json_column("messages", nullable=False))
    answer: str
    created_at: int
