"""HTTP routes of checkpoint permissions: `/v1/fine_tuning/checkpoints/{name}/permissions`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from service.checkpoints import service
from service.checkpoints.schemas import (
    PermissionCreate,
    PermissionDeleted,
    PermissionList,
    PermissionObject,
)
from service.deps import AdminDep, SessionDep

router = APIRouter(prefix="/v1/fine_tuning/checkpoints", tags=["Fine-tuning"])

CheckpointName = Annotated[
    str,
    Path(
        description="A fine-tuned model or checkpoint name (names contain colons).",
        examples=["ft:gpt-4o-mini-2024-07-18:personal:support:9o1eNlSa:ckpt-step-101"],
    ),
]


@router.post(
    "/{fine_tuned_model_checkpoint}/permissions",
    operation_id="createFineTuningCheckpointPermission",
    summary="Share a checkpoint with projects",
    response_model=PermissionList,
)
async def create_fine_tuning_checkpoint_permission(
    fine_tuned_model_checkpoint: CheckpointName,
    body: PermissionCreate,
    caller: AdminDep,
    session: SessionDep,
) -> PermissionList:
    """Let other projects use one of your fine-tuned models or checkpoints (admin key)."""
    rows = await service.create_permissions(
        session=session,
        owner_project_id=caller.project_id,
        name=fine_tuned_model_checkpoint,
        project_ids=body.project_ids,
    )
    return PermissionList.of([PermissionObject.from_row(r) for r in rows])


@router.get(
    "/{fine_tuned_model_checkpoint}/permissions",
    operation_id="listFineTuningCheckpointPermissions",
    summary="List a checkpoint's permissions",
    response_model=PermissionList,
)
async def list_fine_tuning_checkpoint_permissions(
    fine_tuned_model_checkpoint: CheckpointName,
    caller: AdminDep,
    session: SessionDep,
    project_id: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    order: Literal["ascending", "descending"] = "descending",
) -> PermissionList:
    """List the projects a fine-tuned model or checkpoint is shared with (admin key)."""
    rows, has_more = await service.list_permissions(
        session=session,
        owner_project_id=caller.project_id,
        name=fine_tuned_model_checkpoint,
        project_id=project_id,
        after=after,
        limit=limit,
        order=order,
    )
    return PermissionList.of([PermissionObject.from_row(r) for r in rows], has_more=has_more)


@router.delete(
    "/{fine_tuned_model_checkpoint}/permissions/{permission_id}",
    operation_id="deleteFineTuningCheckpointPermission",
    summary="Revoke a checkpoint permission",
    response_model=PermissionDeleted,
)
async def delete_fine_tuning_checkpoint_permission(
    fine_tuned_model_checkpoint: CheckpointName,
    permission_id: Annotated[str, Path(examples=["cp_zc4Q7MP6XxulcVzj4MZdwsAB"])],
    caller: AdminDep,
    session: SessionDep,
) -> PermissionDeleted:
    """Stop sharing a fine-tuned model or checkpoint with one project (admin key)."""
    await service.delete_permission(
        session=session,
        owner_project_id=caller.project_id,
        name=fine_tuned_model_checkpoint,
        permission_id=permission_id,
    )
    return PermissionDeleted(id=permission_id)
