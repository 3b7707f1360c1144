"""Tables of the upstream engine: jobs' links to their provider, files sent or fetched, webhooks."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import pk_column
from service.files import models as _files  # noqa: F401  (foreign-key target)
from service.jobs import models as _jobs  # noqa: F401  (foreign-key target)


class UpstreamJob(SQLModel, table=True):
    """Where a job runs upstream and how far its mirror has come."""

    __tablename__ = "upstream_jobs"
    __table_args__ = (
        sa.UniqueConstraint("provider", "upstream_id", name="uq_upstream_jobs_provider_upstream"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", ondelete="CASCADE", unique=True)
    provider: str = Field(max_length=32, index=True)
    # The provider's job id; None until the job was created there.
    upstream_id: str | None = Field(default=None, max_length=100)
    upstream_status: str | None = Field(default=None, max_length=20)
    # When the job is due for its next sync (Unix seconds); None once it is final here.
    next_sync_at: float | None = Field(default=None, index=True)
    # Failed syncs in a row, and whether the outage was already told in a `warn` event.
    failures: int = 0
    warned: bool = False
    last_error: str | None = Field(default=None, max_length=1000)
    # A new checkpoint was announced: list the provider's checkpoints at the next sync.
    checkpoints_due: bool = True
    # The job was told, in a `warn` event, that its base model shuts down soon.
    retirement_warned: bool = False
    # Brought in by a provider exit: it was not created through this service, and is read-only.
    imported: bool = False
    created_at: int
    updated_at: int


class UpstreamFile(SQLModel, table=True):
    """One of our files as the provider knows it: sent for a job, or fetched from it."""

    __tablename__ = "upstream_files"
    __table_args__ = (
        sa.UniqueConstraint("provider", "file_id", name="uq_upstream_files_provider_file"),
        sa.UniqueConstraint("provider", "upstream_id", name="uq_upstream_files_provider_upstream"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    provider: str = Field(max_length=32)
    file_id: str = Field(foreign_key="files.id", ondelete="CASCADE", index=True)
    upstream_id: str = Field(max_length=100)
    created_at: int


class WebhookDelivery(SQLModel, table=True):
    """A provider's webhook delivery already accepted: a replay of it is refused."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("provider", "webhook_id", name="uq_webhook_deliveries_id"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    provider: str = Field(max_length=32)
    webhook_id: str = Field(max_length=200)
    received_at: int = Field(index=True)


class ModelRecord(SQLModel, table=True):
    """What a provider's fine-tuned model answered to a set of prompts, kept as one of our files."""

    __tablename__ = "model_records"
    __table_args__ = (sa.UniqueConstraint("provider", "model", name="uq_model_records_model"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    provider: str = Field(max_length=32)
    model: str = Field(max_length=300)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", ondelete="CASCADE", index=True)
    file_id: str = Field(foreign_key="files.id", ondelete="CASCADE")
    prompts: int
    created_at: int
