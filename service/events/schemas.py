"""Wire shapes of the events routes other than the stream messages (see `messages.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class StreamTicketObject(BaseModel):
    """A single-use credential for opening one stream from a browser."""

    object: Literal["fine_tuning.stream_ticket"] = "fine_tuning.stream_ticket"
    ticket: str = Field(description="Pass it as `?ticket=`; it works once.")
    expires_at: int = Field(description="Unix seconds after which it no longer works.")
