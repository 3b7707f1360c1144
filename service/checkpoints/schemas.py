"""Wire shapes of checkpoint permissions (OpenAI's `checkpoint.permission`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from service.checkpoints.models import Checkpoint, CheckpointPermission
from service.pagination import ListPage
from service.wire import RequestModel, WireModel


class PermissionCreate(RequestModel):
    """Body of `POST /v1/fine_tuning/checkpoints/{name}/permissions`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"project_ids": ["proj_abGMw1llN8IrBb6SvvY5A1iH"]}]},
    )

    project_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=100
    )


class PermissionObject(WireModel):
    """OpenAI's `checkpoint.permission` object."""

    id: str = Field(examples=["cp_zc4Q7MP6XxulcVzj4MZdwsAB"])
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    created_at: int
    project_id: str

    @classmethod
    def from_row(cls, row: CheckpointPermission) -> PermissionObject:
        """Build the wire object from a table row."""
        return cls(id=row.id, created_at=row.created_at, project_id=row.project_id)


class PermissionDeleted(WireModel):
    """Answer to a permission deletion."""

    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    deleted: bool = True


class PermissionList(ListPage[PermissionObject]):
    """A page of checkpoint permissions."""


class CheckpointObject(WireModel):
    """OpenAI's `fine_tuning.job.checkpoint` object."""

    id: str = Field(examples=["ftckpt_zc4Q7MP6XxulcVzj4MZdwsAB"])
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float | int] = Field(description="The metrics measured at the step.")

    @classmethod
    def from_row(cls, row: Checkpoint) -> CheckpointObject:
        """Build the wire object from a table row."""
        return cls(
            id=row.id,
            created_at=row.created_at,
            fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
            fine_tuning_job_id=row.job_id,
            step_number=row.step_number,
            # OpenAI's metrics are numbers: one not measured is left out, not null.
            metrics={k: v for k, v in row.metrics.items() if v is not None},
        )


class CheckpointList(ListPage[CheckpointObject]):
    """A page of a job's checkpoints, newest first."""
