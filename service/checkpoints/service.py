"""Rules for checkpoint permissions: an admin shares the project's models with other projects."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.checkpoints.models import CheckpointPermission
from service.errors import InvalidRequest, NotFound
from service.ids import new_id, now
from service.models.service import find_derived
from service.pagination import page
from service.projects.models import Project


async def _own_shareable(session: AsyncSession, project_id: str, name: str) -> str:
    derived = await find_derived(session, name)
    if derived is None or derived.project_id != project_id:
        raise NotFound(
            f"No fine-tuned model or checkpoint named '{name}'.",
            param="fine_tuned_model_checkpoint",
            code="model_not_found",
        )
    return derived.name


async def create_permissions(
    *, session: AsyncSession, owner_project_id: str, name: str, project_ids: list[str]
) -> list[CheckpointPermission]:
    """Grant the projects use of the owner's model or checkpoint; existing grants are kept."""
    try:
        return await _grant(session, owner_project_id, name, project_ids)
    except IntegrityError:
        # A concurrent request granted one of the projects first: its grant is the answer.
        await session.rollback()
        return await _grant(session, owner_project_id, name, project_ids)


async def _grant(
    session: AsyncSession, owner_project_id: str, name: str, project_ids: list[str]
) -> list[CheckpointPermission]:
    await _own_shareable(session, owner_project_id, name)
    wanted = list(dict.fromkeys(project_ids))
    if owner_project_id in wanted:
        raise InvalidRequest("A project cannot be granted its own checkpoint.", param="project_ids")
    known = set((await session.exec(select(Project.id).where(col(Project.id).in_(wanted)))).all())
    missing = [p for p in wanted if p not in known]
    if missing:
        raise InvalidRequest(
            f"No project found with id '{missing[0]}'.",
            param="project_ids",
            code="project_not_found",
        )
    existing = {
        row.project_id: row
        for row in (
            await session.exec(
                select(CheckpointPermission).where(
                    CheckpointPermission.model_name == name,
                    col(CheckpointPermission.project_id).in_(wanted),
                )
            )
        ).all()
    }
    result = []
    for project_id in wanted:
        grant = existing.get(project_id)
        if grant is None:
            grant = CheckpointPermission(
                id=new_id("cp_"),
                model_name=name,
                owner_project_id=owner_project_id,
                project_id=project_id,
                created_at=now(),
            )
            session.add(grant)
        result.append(grant)
    await session.commit()
    return result


async def list_permissions(
    *,
    session: AsyncSession,
    owner_project_id: str,
    name: str,
    project_id: str | None,
    after: str | None,
    limit: int,
    order: str,
) -> tuple[list[CheckpointPermission], bool]:
    """Return a page of the grants on the owner's model or checkpoint."""
    await _own_shareable(session, owner_project_id, name)
    where = [
        col(CheckpointPermission.model_name) == name,
        col(CheckpointPermission.owner_project_id) == owner_project_id,
    ]
    if project_id is not None:
        where.append(col(CheckpointPermission.project_id) == project_id)
    return await page(
        session,
        CheckpointPermission,
        where=where,
        after=after,
        limit=limit,
        descending=order == "descending",
    )


async def delete_permission(
    *, session: AsyncSession, owner_project_id: str, name: str, permission_id: str
) -> None:
    """Revoke one grant on the owner's model or checkpoint."""
    await _own_shareable(session, owner_project_id, name)
    grant = (
        await session.exec(
            select(CheckpointPermission).where(
                CheckpointPermission.id == permission_id,
                CheckpointPermission.model_name == name,
                CheckpointPermission.owner_project_id == owner_project_id,
            )
        )
    ).first()
    if grant is None:
        raise NotFound(f"No permission found with id '{permission_id}'.", param="permission_id")
    await session.delete(grant)
    await session.commit()
