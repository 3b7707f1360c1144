"""Every table, imported in one place so `SQLModel.metadata` is complete (Alembic, tests)."""

from sqlmodel import SQLModel

from service.checkpoints.models import Checkpoint, CheckpointPermission
from service.engines.upstream.models import (
    ModelRecord,
    UpstreamFile,
    UpstreamJob,
    WebhookDelivery,
)
from service.events.models import StreamTicket
from service.files.models import File, FileCheck
from service.idempotency import IdempotencyRecord
from service.jobs.models import Job, JobEvent
from service.models.models import FineTunedModel
from service.projects.models import ApiKey, Project
from service.studio.models import EmailDataset, StudioSettings

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "Checkpoint",
    "EmailDataset",
    "CheckpointPermission",
    "File",
    "FileCheck",
    "FineTunedModel",
    "IdempotencyRecord",
    "ModelRecord",
    "Job",
    "JobEvent",
    "Project",
    "StreamTicket",
    "StudioSettings",
    "UpstreamFile",
    "UpstreamJob",
    "WebhookDelivery",
    "metadata",
]
