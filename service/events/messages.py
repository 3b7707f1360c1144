"""Messages of the event streams (WebSocket and SSE), and close codes; see `/asyncapi.json`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.jobs.schemas import EventObject, JobObject

# WebSocket close codes. 1000, 1001 and 1013 are standard; 4xxx mirror HTTP statuses.
CLOSE_JOB_FINISHED = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

CLOSE_CODES: dict[int, str] = {
    CLOSE_JOB_FINISHED: "The job reached a final status and its last event was sent.",
    CLOSE_GOING_AWAY: "The server is shutting down; reconnect with `after` set to the last id.",
    CLOSE_SERVER_ERROR: "The server had an error; reconnect with `after` set to the last id.",
    CLOSE_TRY_AGAIN_LATER: (
        "The client fell behind (its queue was full); reconnect with `after` set to the last "
        "event id received, and nothing is lost."
    ),
    CLOSE_BAD_REQUEST: "Invalid query parameter (for example an unknown `after` id).",
    CLOSE_UNAUTHENTICATED: "Missing, unknown, used or expired credentials.",
    CLOSE_NOT_FOUND: "No such job in the caller's project.",
}


class EventMessage(BaseModel):
    """A job event, in order; its `event.id` is the cursor to resume after."""

    type: Literal["event"] = "event"
    job_id: str = Field(description="The job the event belongs to.")
    event: EventObject


class JobProgress(BaseModel):
    """Training progress from the job's latest metrics event."""

    step: int
    total_steps: int | None = None


class JobMessage(BaseModel):
    """The job's current state: sent on connect and whenever the job changes."""

    type: Literal["job"] = "job"
    job: JobObject
    progress: JobProgress | None = Field(
        default=None, description="Null until the first metrics event."
    )


class HeartbeatMessage(BaseModel):
    """Sent every heartbeat interval (15 s by default) so proxies and clients see a live link."""

    type: Literal["heartbeat"] = "heartbeat"
    time: int = Field(description="Server time, Unix seconds.")
