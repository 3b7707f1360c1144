"""Table for fine-tuned models produced by jobs."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from service.db import pk_column
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
