"""Tables of outbound webhooks: the endpoints a project registered, and each message to send."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import json_column, pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class WebhookEndpoint(SQLModel, table=True):
    """A URL that receives a project's events of the chosen types, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    pk: int | None = Field(default=None, sa_column=pk_column())
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    name: str = Field(max_length=255)
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(sa_column=json_column("event_types", nullable=False))
    # The signing secret must be kept to sign: it is returned only at creation and rotation.
    secret: str = Field(max_length=100)
    # After a rotation that keeps the old secret for 24 h, deliveries carry both signatures.
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_expires_at: int | None = None
    created_at: int
    updated_at: int


class WebhookMessage(SQLModel, table=True):
    """One event for one endpoint: its exact body, and where its delivery stands.

    Written in the transaction that makes the event happen (a job's final status), so a crash
    loses none; retried with backoff until delivered or the retry window (72 h) has passed.
    """

    __tablename__ = "webhook_messages"
    __table_args__ = (sa.Index("ix_webhook_messages_due", "status", "next_attempt_at"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    # The `webhook-id` header: the same on every attempt, so receivers can drop repeats.
    id: str = Field(max_length=40, unique=True, index=True)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", ondelete="CASCADE", index=True)
    project_id: str = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=64)
    payload: str = Field(sa_type=sa.Text)
    is_test: bool = False
    status: str = Field(max_length=20)  # pending, delivered, failed
    attempts: int = 0
    created_at: int
    next_attempt_at: float | None = None
    # A dispatcher sending it holds it until then (a crashed one's claim runs out).
    claimed_until: float | None = None
    last_attempt_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: int | None = None
