"""HTTP routes of the admin API: `/v1/organization/projects` and their API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.deps import AdminDep, SessionDep
from service.projects import service
from service.projects.schemas import (
    ApiKeyCreate,
    ApiKeyObject,
    ProjectCreate,
    ProjectList,
    ProjectObject,
)

router = APIRouter(prefix="/v1/organization/projects", tags=["Organization"])


@router.post(
    "", operation_id="createProject", summary="Create a project", response_model=ProjectObject
)
async def create_project(
    body: ProjectCreate, caller: AdminDep, session: SessionDep
) -> ProjectObject:
    """Create a project (admin key)."""
    return ProjectObject.from_row(await service.create_project(session=session, name=body.name))


@router.get(
    "",
    operation_id="listProjects",
    summary="List projects",
    response_model=ProjectList,
)
async def list_projects(caller: AdminDep, session: SessionDep) -> ProjectList:
    """List every project (admin key)."""
    rows = await service.list_projects(session=session)
    return ProjectList.of([ProjectObject.from_row(r) for r in rows])


@router.post(
    "/{project_id}/api_keys",
    operation_id="createProjectApiKey",
    summary="Create an API key",
    response_model=ApiKeyObject,
)
async def create_project_api_key(
    project_id: Annotated[str, Path(examples=["proj_abGMw1llN8IrBb6SvvY5A1iH"])],
    body: ApiKeyCreate,
    caller: AdminDep,
    session: SessionDep,
) -> ApiKeyObject:
    """Create an API key in a project (admin key); its value is returned only this once."""
    project = await service.get_project(session=session, project_id=project_id)
    new = await service.create_api_key(
        session=session, project=project, name=body.name, admin=body.admin
    )
    return ApiKeyObject.from_row(new.key, value=new.value)
