"""Tables of the email studio: settings, datasets, history, feedback, retrainings, evaluations."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.files import models as _files  # noqa: F401  (foreign-key target)
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class StudioSettings(SQLModel, table=True):
    """A project's choices for the studio; a project without a row has the defaults."""

    __tablename__ = "studio_settings"

    pk: int | None = Field(default=None, sa_column=pk_column())
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", unique=True)
    # {department: {language: prompt}} and {language: template}, over the seed's defaults.
    system_prompts: dict[str, Any] = Field(
        default_factory=dict, sa_column=json_column("system_prompts", nullable=False)
    )
    user_templates: dict[str, Any] = Field(
        default_factory=dict, sa_column=json_column("user_templates", nullable=False)
    )
    # Off only for projects that train locally: their datasets may not leave the machine.
    redact: bool = True
    # Feedback that starts a retraining, per scope ({scope: n}); the seed's 50 otherwise.
    feedback_thresholds: dict[str, Any] = Field(
        default_factory=dict, sa_column=json_column("feedback_thresholds", nullable=False)
    )
    updated_at: int


class EmailDataset(SQLModel, table=True):
    """A dataset built from e-mail history: its files, the options it was built with, its report."""

    __tablename__ = "email_datasets"
    __table_args__ = (sa.Index("ix_email_datasets_project_pk", "project_id", "pk"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    created_at: int
    # "supervised" (chat examples from history) or "dpo" (preference pairs).
    method: str = Field(default="supervised", max_length=20)
    training_file: str = Field(foreign_key="files.id", ondelete="CASCADE")
    validation_file: str | None = Field(default=None, foreign_key="files.id", ondelete="SET NULL")
    department: str | None = Field(default=None, max_length=100)
    user_id: str | None = Field(default=None, max_length=200)
    redacted: bool = True
    options: dict[str, Any] = Field(sa_column=json_column("options", nullable=False))
    report: dict[str, Any] = Field(sa_column=json_column("report", nullable=False))


class StudioEmail(SQLModel, table=True):
    """A mail of the project's history, kept so that feedback can name it by its id."""

    __tablename__ = "studio_emails"
    __table_args__ = (sa.UniqueConstraint("project_id", "email_id", name="uq_studio_emails_id"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    email_id: str = Field(max_length=200)
    user_id: str = Field(default="", max_length=200)
    department: str = Field(default="", max_length=100)
    language: str = Field(default="fr", max_length=10)
    category: str = Field(default="", max_length=500)
    context: str
    subject: str
    body: str
    rating: int | None = None
    updated_at: int


class Feedback(SQLModel, table=True):
    """A user's rating of a mail or a completion, with the rewrite they would have sent."""

    __tablename__ = "studio_feedback"
    __table_args__ = (sa.Index("ix_studio_feedback_scope", "project_id", "scope", "retraining_id"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    scope: str = Field(max_length=120)
    email_id: str | None = Field(default=None, max_length=200)
    completion_id: str | None = Field(default=None, max_length=60)
    rating: int
    improvements: str = ""
    created_at: int
    # Set when a retraining used this feedback; feedback counts toward one retraining only.
    retraining_id: str | None = Field(default=None, max_length=40)


class Retraining(SQLModel, table=True):
    """A scope's training run: its first model (kind "initial": a department's or a user's) or
    a feedback-driven DPO job (kind "feedback"), from its start to promotion or rejection."""

    __tablename__ = "studio_retrainings"
    # One feedback run per scope and generation: concurrent feedback starts it exactly once.
    # (Initial runs have no generation; NULLs never collide.)
    __table_args__ = (
        sa.UniqueConstraint("project_id", "scope", "generation", name="uq_retrainings_generation"),
        sa.Index("ix_studio_retrainings_status", "status"),
    )

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    scope: str = Field(max_length=120)
    kind: str = Field(max_length=20)  # initial | feedback
    generation: int | None = None
    # starting, preparing, training, evaluating; then promoted, kept (initial, a model was already
    # promoted), rejected (its evaluation failed) or failed.
    status: str = Field(max_length=20)
    base_model: str = Field(max_length=300)
    job_id: str | None = Field(default=None, max_length=40)
    dataset_id: str | None = Field(default=None, max_length=40)
    evaluation_id: str | None = Field(default=None, max_length=40)
    n_feedback: int
    n_pairs: int
    detail: str | None = None
    created_at: int
    updated_at: int


class Evaluation(SQLModel, table=True):
    """A model's answers to held-out prompts, scored and compared with another model's."""

    __tablename__ = "studio_evaluations"
    __table_args__ = (sa.Index("ix_studio_evaluations_project_pk", "project_id", "pk"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE")
    status: str = Field(max_length=20)  # queued, running, completed, failed
    model: str = Field(max_length=300)
    request: dict[str, Any] = Field(sa_column=json_column("request", nullable=False))
    summary: dict[str, Any] | None = Field(default=None, sa_column=json_column("summary"))
    results: list[dict[str, Any]] | None = Field(default=None, sa_column=json_column("results"))
    error: str | None = None
    created_at: int
    finished_at: int | None = None
