"""Table of stream tickets: single-use, short-lived credentials for browser streams."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from service.db import pk_column
from service.projects import models as _projects  # noqa: F401  (foreign-key target)


class StreamTicket(SQLModel, table=True):
    """A ticket that opens one stream as its API key; only its SHA-256 digest is stored."""

    __tablename__ = "stream_tickets"

    pk: int | None = Field(default=None, sa_column=pk_column())
    ticket_hash: str = Field(max_length=64, unique=True)
    api_key_id: str = Field(foreign_key="api_keys.id", ondelete="CASCADE", index=True)
    created_at: int
    expires_at: float = Field(index=True)
    used_at: float | None = None
