"""Wire shapes of the admin API for projects and API keys (OpenAI-like paths)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.pagination import ListPage
from service.projects.models import ApiKey, Project
from service.wire import RequestModel


class ProjectCreate(RequestModel):
    """Body of `POST /v1/organization/projects`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "support"}]})

    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")


class ProjectObject(BaseModel):
    """A project."""

    id: str = Field(examples=["proj_abGMw1llN8IrBb6SvvY5A1iH"])
    object: Literal["organization.project"] = "organization.project"
    name: str
    created_at: int
    status: Literal["active"] = "active"

    @classmethod
    def from_row(cls, row: Project) -> ProjectObject:
        """Build the wire object from a table row."""
        return cls(id=row.id, name=row.name, created_at=row.created_at)


class ApiKeyCreate(RequestModel):
    """Body of `POST /v1/organization/projects/{project_id}/api_keys`."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "spa", "admin": False}]}
    )

    name: str = Field(min_length=1, max_length=200)
    admin: bool = False


class ApiKeyObject(BaseModel):
    """An API key; `value` is present only in the answer that created it."""

    id: str
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    name: str
    project_id: str
    admin: bool
    created_at: int
    redacted_value: str
    value: str | None = Field(default=None, description="The key, shown once at creation.")

    @classmethod
    def from_row(cls, row: ApiKey, value: str | None = None) -> ApiKeyObject:
        """Build the wire object from a table row."""
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            admin=row.admin,
            created_at=row.created_at,
            redacted_value=row.redacted_value,
            value=value,
        )


class ProjectList(ListPage[ProjectObject]):
    """Every project."""
