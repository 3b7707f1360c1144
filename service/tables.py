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
from service.exports.models import ModelExport, ModelExportEvent
from service.files.models import File, FileCheck
from service.idempotency import IdempotencyRecord
from service.jobs.models import Job, JobEvent
from service.models.models import AliasChange, AliasCompletion, FineTunedModel, ModelAlias
from service.projects.models import ApiKey, Project
from service.studio.models import (
    EmailDataset,
    Evaluation,
    Feedback,
    Retraining,
    StudioEmail,
    StudioSettings,
)
from service.uploads.models import Upload, UploadPart
from service.webhooks.models import WebhookEndpoint, WebhookMessage

metadata = SQLModel.metadata

__all__ = [
    "AliasChange",
    "AliasCompletion",
    "ApiKey",
    "Checkpoint",
    "EmailDataset",
    "Evaluation",
    "Feedback",
    "CheckpointPermission",
    "File",
    "FileCheck",
    "FineTunedModel",
    "IdempotencyRecord",
    "ModelExport",
    "ModelExportEvent",
    "ModelAlias",
    "ModelRecord",
    "Job",
    "JobEvent",
    "Project",
    "Retraining",
    "StreamTicket",
    "StudioEmail",
    "StudioSettings",
    "Upload",
    "UploadPart",
    "UpstreamFile",
    "UpstreamJob",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
    "metadata",
]
