"""Tables for fine-tuning jobs and their append-only events."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class Job(SQLModel, table=True):
    """A fine-tuning job: OpenAI's fields, plus what engines need to run it."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        sa.Index("ix_jobs_project_pk", "project_id", "pk"),
        sa.Index("ix_jobs_engine_status", "engine", "status"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    created_at: int
    updated_at: int
    # `model` echoes what was asked for, resolved (a base snapshot, or an ft:/checkpoint name
    # for continued training); `base_model` is always the registry base it stands on.
    model: str = Field(max_length=256)
    base_model: str = Field(max_length=200)
    engine: str = Field(max_length=20)
    organization_id: str = Field(max_length=80)
    training_file: str = Field(max_length=40)
    validation_file: str | None = Field(default=None, max_length=40)
    status: str = Field(max_length=20)
    method: dict[str, Any] = Field(sa_column=json_column("method", nullable=False))
    seed: int
    suffix: str | None = Field(default=None, max_length=64)
    metadata_: dict[str, str] | None = Field(default=None, sa_column=json_column("metadata"))
    integrations: list[dict[str, Any]] | None = Field(
        default=None, sa_column=json_column("integrations")
    )
    error: dict[str, Any] | None = Field(default=None, sa_column=json_column("error"))
    fine_tuned_model: str | None = Field(default=None, max_length=256)
    finished_at: int | None = None
    trained_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    # At creation: {billed_tokens, cost_usd: {low, high} | None, compute_seconds: {low, high} |
    # None}; at the end, the cost of trained_tokens at the base's price (None where free).
    estimate: dict[str, Any] | None = Field(default=None, sa_column=json_column("estimate"))
    cost_usd: float | None = None
    estimated_finish: int | None = None
    result_files: list[str] = Field(
        default_factory=list, sa_column=json_column("result_files", nullable=False)
    )
    # Highest event sequence number handed out; bumped with UPDATE ... RETURNING.
    event_seq: int = 0
    # Engine bookkeeping: which worker holds the job and until when.
    lease_owner: str | None = Field(default=None, max_length=120)
    lease_expires_at: float | None = None
    attempts: int = 0


class JobEvent(SQLModel, table=True):
    """One line of a job's log: a status message or a step's metrics."""

    __tablename__ = "fine_tuning_job_events"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),
        # An engine's own id of an event it reports: a report repeated is stored once.
        sa.UniqueConstraint("job_id", "source_id", name="uq_job_events_job_source"),
        # A project's stream replays its events in pk order.
        sa.Index("ix_job_events_project_pk", "project_id", "pk"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", ondelete="CASCADE")
    project_id: str = Field(max_length=40, index=True)
    seq: int
    created_at: int
    level: str = Field(max_length=10)
    message: str
    type: str = Field(max_length=10)
    data: dict[str, Any] | None = Field(default=None, sa_column=json_column("data"))
    source_id: str | None = Field(default=None, max_length=100)
