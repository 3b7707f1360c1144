"""Tables for projects and API keys (keys are stored as SHA-256 digests, never in clear)."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from service.db import pk_column


class Project(SQLModel, table=True):
    """A tenant: every object belongs to exactly one project."""

    __tablename__ = "projects"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200, unique=True)
    created_at: int
    # USD the project's training jobs may cost in all; None: no limit.
    budget_usd: float | None = None


class ApiKey(SQLModel, table=True):
    """A bearer key of one project; admin keys may also manage projects and permissions."""

    __tablename__ = "api_keys"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    name: str = Field(max_length=200)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    redacted_value: str = Field(max_length=40)
    admin: bool = False
    created_at: int
