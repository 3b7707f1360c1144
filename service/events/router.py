"""Routes of live events: WebSocket and SSE streams, stream tickets, the project's event log,
and the AsyncAPI document of the stream messages."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service import __version__
from service.auth import Caller, authenticate
from service.db import Database
from service.deps import CallerDep, SessionDep, SettingsDep, get_caller
from service.errors import APIError, AuthenticationFailed
from service.events import service
from service.events.asyncapi import asyncapi_document
from service.events.messages import CLOSE_SERVER_ERROR
from service.events.schemas import StreamTicketObject
from service.events.service import Scope
from service.events.streams import EventStream
from service.jobs.schemas import EventList, EventObject
from service.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["Fine-tuning"])

SSE_MEDIA_TYPE = "text/event-stream"
# A close frame's payload is 125 bytes: 2 for the code, 123 for the reason (RFC 6455 5.5).
MAX_CLOSE_REASON_BYTES = 123
# EventSource waits this long before reconnecting after a stream ends.
SSE_RETRY_MILLISECONDS = 2000
# The stream operations answer text/event-stream only: a generated client types an operation's
# answer from its content types, and JSON and SSE in one operation made every list a union.
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            SSE_MEDIA_TYPE: {
                "schema": {"type": "string"},
                "example": 'id: ftevent-abc\nevent: event\ndata: {"type": "event", ...}\n\n',
            }
        },
        "description": "Server-sent events, described in /asyncapi.json.",
    },
    204: {"description": "The stream is over (the job has ended and nothing is left to send)."},
}


# ---------------------------------------------------------------- credentials


async def _stream_caller(
    database: Database, authorization: str | None, ticket: str | None
) -> Caller:
    async with database.session() as session:
        if authorization:
            return await authenticate(session=session, authorization=authorization)
        if ticket:
            return await service.redeem_ticket(session, ticket)
    raise AuthenticationFailed(
        "Provide an API key in the Authorization header, or a ticket from "
        "POST /v1/fine_tuning/stream_tickets in the `ticket` query parameter.",
        code="missing_api_key",
    )


_TRUE = {"1", "true", "on", "yes", "y", "t"}  # what FastAPI reads as True for `stream`


async def get_ticket_caller(request: Request) -> Caller:
    """Authenticate a stream: by header, or by a ticket (browsers cannot set headers)."""
    return await _stream_caller(
        request.app.state.database,
        request.headers.get("authorization"),
        request.query_params.get("ticket"),
    )


async def get_stream_caller(request: Request) -> Caller:
    """Authenticate by header; a streaming request (`stream=true`) may use a ticket instead."""
    if request.query_params.get("stream", "").lower() not in _TRUE:
        return await get_caller(request)  # OpenAI's route, OpenAI's answers
    return await get_ticket_caller(request)


StreamCallerDep = Annotated[Caller, Depends(get_stream_caller)]
TicketCallerDep = Annotated[Caller, Depends(get_ticket_caller)]


@router.post(
    "/v1/fine_tuning/stream_tickets",
    operation_id="createStreamTicket",
    summary="Create a stream ticket",
    response_model=StreamTicketObject,
)
async def create_stream_ticket(
    caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> StreamTicketObject:
    """Issue a ticket that opens one event stream as this key, once, within
    `FT_STREAM_TICKET_SECONDS` (60 s by default). For browsers, which cannot set headers on a
    WebSocket or an EventSource: pass it as `?ticket=`. An extension."""
    value, expires_at = await service.create_ticket(session, caller, settings.stream_ticket_seconds)
    return StreamTicketObject(ticket=value, expires_at=expires_at)


# ---------------------------------------------------------------- SSE


def _stream(request: Request | WebSocket, scope: Scope, after: int) -> EventStream:
    settings: Settings = request.app.state.settings
    return EventStream(
        database=request.app.state.database,
        hub=request.app.state.hub,
        scope=scope,
        after=after,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
        starts=request.app.state.stream_starts,
    )


async def _sse_frames(stream: EventStream, start_id: str | None) -> AsyncIterator[str]:
    yield f"retry: {SSE_RETRY_MILLISECONDS}\n\n"
    if start_id is not None:
        # Sets EventSource's last event id, so a reconnect before any event misses nothing.
        yield f"id: {start_id}\n\n"
    try:
        async with contextlib.aclosing(stream.messages()) as messages:
            async for message in messages:
                head = f"id: {message.event_id}\n" if message.event_id else ""
                yield f"{head}event: {message.kind}\ndata: {message.text}\n\n"
    except Exception:
        # The response has started: end it cleanly; EventSource resumes with Last-Event-ID.
        log.exception("event stream failed (%s)", stream.scope)


async def sse_response(
    request: Request, scope: Scope, after: str | None, last_event_id: str | None
) -> Response:
    """Stream the scope's messages as server-sent events, after `Last-Event-ID` or `after`."""
    async with request.app.state.stream_starts, request.app.state.database.session() as session:
        start = await service.start_stream(session, scope, last_event_id or after)
    if start.finished:
        return Response(status_code=204)  # tells EventSource the stream is over: no reconnect
    return StreamingResponse(
        _sse_frames(_stream(request, scope, start.position), start.start_id),
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


ResumeHeader = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=64, description="SSE resume cursor (an event id)."),
]
TicketParam = Annotated[
    str | None, Query(max_length=128, description="A stream ticket, for browsers.")
]
StreamAfterQuery = Annotated[
    str | None,
    Query(max_length=64, description="Replay the stored events after this one, then go live."),
]
# The list routes still stream with `stream=true`, as they always have, but the document shows
# the stream as its own operation (`.../events/stream`), so these stay out of it.
LastEventIdHeader = Annotated[
    str | None, Header(alias="Last-Event-ID", max_length=64, include_in_schema=False)
]
TicketQuery = Annotated[str | None, Query(max_length=128, include_in_schema=False)]
StreamQuery = Annotated[bool, Query(include_in_schema=False)]


@router.get(
    "/v1/fine_tuning/events",
    operation_id="listProjectFineTuningEvents",
    summary="List the project's job events",
    response_model=EventList,
)
async def list_project_events(
    request: Request,
    caller: StreamCallerDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: StreamQuery = False,
    ticket: TicketQuery = None,
    last_event_id: LastEventIdHeader = None,
) -> EventList | Response:
    """Every job's events in the project, newest first. An extension; its stream is
    `streamProjectFineTuningEvents`."""
    scope = Scope(project_id=caller.project_id)
    if stream:
        return await sse_response(request, scope, after, last_event_id)
    rows, has_more = await service.list_events(session, scope, after=after, limit=limit)
    return EventList.of([EventObject.from_row(r) for r in rows], has_more=has_more)


@router.get(
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events/stream",
    operation_id="streamFineTuningEvents",
    summary="Stream a job's events",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
)
async def stream_fine_tuning_events(
    request: Request,
    fine_tuning_job_id: str,
    caller: TicketCallerDep,
    after: StreamAfterQuery = None,
    ticket: TicketParam = None,
    last_event_id: ResumeHeader = None,
) -> Response:
    """A job's events as server-sent events: the stored ones after `Last-Event-ID` or `after`
    (all without), then live ones; the stream ends after the job's final event. An extension,
    also answered by `GET .../events?stream=true`; the same path upgrades to a WebSocket."""
    scope = Scope(project_id=caller.project_id, job_id=fine_tuning_job_id)
    return await sse_response(request, scope, after, last_event_id)


@router.get(
    "/v1/fine_tuning/events/stream",
    operation_id="streamProjectFineTuningEvents",
    summary="Stream the project's job events",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
)
async def stream_project_fine_tuning_events(
    request: Request,
    caller: TicketCallerDep,
    after: StreamAfterQuery = None,
    ticket: TicketParam = None,
    last_event_id: ResumeHeader = None,
) -> Response:
    """Every job event of the project as server-sent events, oldest first after `after` or
    `Last-Event-ID`, else live only. An extension, also answered by
    `GET /v1/fine_tuning/events?stream=true`."""
    return await sse_response(request, Scope(project_id=caller.project_id), after, last_event_id)


# ---------------------------------------------------------------- WebSocket


async def _serve_websocket(websocket: WebSocket, job_id: str | None) -> None:
    """Authenticate, check the scope and cursor, then pump the stream until it or the client ends.

    The socket is accepted first, so that a refusal has a close code a browser can read
    (4401, 4404, 4400: the HTTP status plus 4000) before any data is sent.
    """
    await websocket.accept()
    database: Database = websocket.app.state.database
    try:
        async with websocket.app.state.stream_starts:
            caller = await _stream_caller(
                database,
                websocket.headers.get("authorization"),
                websocket.query_params.get("ticket"),
            )
            scope = Scope(project_id=caller.project_id, job_id=job_id)
            async with database.session() as session:
                start = await service.start_stream(
                    session, scope, websocket.query_params.get("after")
                )
    except APIError as error:
        await _close(websocket, 4000 + error.status_code, error.message)
        return
    except Exception:
        log.exception("event stream could not start")
        await _close(websocket, CLOSE_SERVER_ERROR)
        return
    stream = _stream(websocket, scope, start.position)
    async with anyio.create_task_group() as tasks:

        async def pump() -> None:
            code = await _send_all(websocket, stream)
            if code is not None:
                await _close(websocket, code)
            tasks.cancel_scope.cancel()

        async def watch() -> None:
            # Client messages are ignored; reading is how a disconnect is noticed.
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(pump)
        tasks.start_soon(watch)


async def _close(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close the socket if it is still open; the reason is cut to the 123 bytes a frame holds."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    fitting = reason.encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.close(code=code, reason=fitting)


async def _send_all(websocket: WebSocket, stream: EventStream) -> int | None:
    """Send the stream's messages; return the close code, or None if the client went away."""
    try:
        async with contextlib.aclosing(stream.messages()) as messages:
            async for message in messages:
                try:
                    await websocket.send_text(message.text)
                except (WebSocketDisconnect, OSError, RuntimeError):
                    return None  # the client went away: its cursor resumes it
    except Exception:
        log.exception("event stream failed (%s)", stream.scope)
        return CLOSE_SERVER_ERROR
    return stream.close_code or CLOSE_SERVER_ERROR


@router.websocket("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events/stream")
async def stream_job_events(websocket: WebSocket, fine_tuning_job_id: str) -> None:
    """One job's events over a WebSocket: snapshot, replay after `after`, then live."""
    await _serve_websocket(websocket, fine_tuning_job_id)


@router.websocket("/v1/fine_tuning/events/stream")
async def stream_project_events(websocket: WebSocket) -> None:
    """Every job event of the caller's project over a WebSocket."""
    await _serve_websocket(websocket, None)


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the stream messages."""
    return asyncapi_document(version=__version__)
