"""The AsyncAPI 3.0 document of the event streams, served at `/asyncapi.json`; message schemas are
generated from the models in `messages.py`, so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from service.events.messages import (
    CLOSE_CODES,
    CLOSE_JOB_FINISHED,
    CLOSE_NOT_FOUND,
    EventMessage,
    HeartbeatMessage,
    JobMessage,
)

_REF_TEMPLATE = "#/components/schemas/{model}"
_MESSAGES: dict[str, type[BaseModel]] = {
    "event": EventMessage,
    "job": JobMessage,
    "heartbeat": HeartbeatMessage,
}
_JOB_CHANNEL = "fineTuningJobEvents"
_PROJECT_CHANNEL = "fineTuningEvents"
# Neither applies to the project stream: it outlives every job and names no job.
_JOB_ONLY_CLOSE_CODES = {CLOSE_JOB_FINISHED, CLOSE_NOT_FOUND}

_DESCRIPTION = """\
Live events of fine-tuning jobs, as WebSocket text frames of JSON (one message per frame).

**Order.** On connect the server sends `job` snapshot(s) first (the job; for the project stream,
each unfinished job of the caller's project), then the stored events after `after`, then live
ones, with no duplicate. Without `after`, the one-job stream replays the job's whole log and the
project stream starts with live events only. A `heartbeat` comes every 15 s by default
(`FT_STREAM_HEARTBEAT_SECONDS`). The one-job stream closes with 1000 after the job's final
event. Client messages are ignored.

**Resume.** Keep the `event.id` of the last `event` message; after any disconnect, reconnect with
`after=<that id>`: nothing is lost and nothing is repeated.

**Authentication.** The `Authorization: Bearer <key>` header on the handshake, or, for browsers
(which cannot set headers on a WebSocket), `ticket=<ticket>`: a single-use ticket valid for 60 s
by default (`FT_STREAM_TICKET_SECONDS`) from `POST /v1/fine_tuning/stream_tickets`. Never put an
API key in a URL.

**Server-Sent Events.** The same messages are served as `text/event-stream` by
`GET /v1/fine_tuning/jobs/{job_id}/events/stream` and `GET /v1/fine_tuning/events/stream`
(also by the list routes with `?stream=true`): `event: <type>` and `data: <the same JSON>`, plus
`id: <event id>` on `event` messages. Resume
with the `Last-Event-ID` header (sent by EventSource) or `after`; authenticate with the
`Authorization` header or `ticket`. A slow SSE consumer's response ends; it reconnects with
`Last-Event-ID`.

**Close codes.**

| Code | Meaning |
|---|---|
"""


class _SentSchema(GenerateJsonSchema):
    """Schemas of what the server sends: a field with a default is still always present."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        """Mark every sent field required: messages are dumped whole, with defaults and nulls,
        except the optional fields left out when they have no value (`service.wire.omitted`)."""
        if field.get("serialization_exclude_if") is not None:
            return False
        return not field.get("serialization_exclude", False)


def _close_codes(*, job_stream: bool) -> dict[str, str]:
    return {
        str(code): meaning
        for code, meaning in sorted(CLOSE_CODES.items())
        if job_stream or code not in _JOB_ONLY_CLOSE_CODES
    }


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MESSAGES.values():
        schema = model.model_json_schema(
            ref_template=_REF_TEMPLATE, schema_generator=_SentSchema, mode="serialization"
        )
        found = {**schema.pop("$defs", {}), model.__name__: schema}
        for name, definition in found.items():
            if schemas.setdefault(name, definition) != definition:
                raise ValueError(f"two different schemas are named {name}")
    return schemas


def _query() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "after": {
                "type": "string",
                "pattern": "^ftevent-[A-Za-z0-9]+$",
                "description": "Resume after this event: the stored events after it are "
                "replayed, then live ones follow, with no duplicate. An unknown id closes "
                "with 4400.",
                "examples": ["ftevent-TDcK6kP2mRRiof75k5YpPXzb"],
            },
            "ticket": {
                "type": "string",
                "description": "A single-use ticket from `POST /v1/fine_tuning/stream_tickets`, "
                "for clients that cannot send the Authorization header.",
            },
        },
    }


def _channel(*, address: str, title: str, description: str, job_stream: bool) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "title": title,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in _MESSAGES},
        "bindings": {
            "ws": {
                "method": "GET",
                "query": _query(),
                "headers": {
                    "type": "object",
                    "properties": {
                        "Authorization": {
                            "type": "string",
                            "description": "`Bearer <API key>`; or use `ticket`.",
                        }
                    },
                },
                "bindingVersion": "0.1.0",
            }
        },
        "x-close-codes": _close_codes(job_stream=job_stream),
    }
    if job_stream:
        channel["parameters"] = {
            "job_id": {
                "description": "The job's id; an unknown job, or another project's, closes "
                "with 4404 before any message.",
                "examples": ["ftjob-UiaiLwGdGBfdLQDBAoQheufN"],
            }
        }
    return channel


def _operation(*, channel: str, summary: str) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in _MESSAGES],
    }


def _message(name: str, model: type[BaseModel]) -> dict[str, Any]:
    summary = (model.__doc__ or "").strip().splitlines()[0]
    return {
        "name": name,
        "title": model.__name__,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": _REF_TEMPLATE.format(model=model.__name__)},
    }


def asyncapi_document(*, version: str) -> dict[str, Any]:
    """Return the AsyncAPI 3.0.0 document of the WebSocket event streams."""
    close_table = "".join(f"| {code} | {text} |\n" for code, text in sorted(CLOSE_CODES.items()))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "IAPosteManager fine-tuning: live job events",
            "version": version,
            "description": _DESCRIPTION + close_table,
        },
        "defaultContentType": "application/json",
        "servers": {
            "service": {
                "host": "{host}",
                "protocol": "ws",
                "description": "The fine-tuning service; `wss` behind a TLS proxy.",
                "variables": {
                    "host": {"default": "localhost:8000", "description": "Host and port."}
                },
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/ticket"},
                ],
            }
        },
        "channels": {
            _JOB_CHANNEL: _channel(
                address="/v1/fine_tuning/jobs/{job_id}/events/stream",
                title="One job's events",
                description="The job's snapshot, its log after `after` (the whole log without "
                "it), then live events; closes with 1000 after the job's final event. SSE: "
                "`GET /v1/fine_tuning/jobs/{job_id}/events?stream=true`.",
                job_stream=True,
            ),
            _PROJECT_CHANNEL: _channel(
                address="/v1/fine_tuning/events/stream",
                title="Every job of the caller's project",
                description="A snapshot of each unfinished job, the events after `after` (none "
                "without it), then live events of every job in the project. SSE: "
                "`GET /v1/fine_tuning/events?stream=true`.",
                job_stream=False,
            ),
        },
        "operations": {
            "streamFineTuningJobEvents": _operation(
                channel=_JOB_CHANNEL, summary="Stream one fine-tuning job's events."
            ),
            "streamFineTuningEvents": _operation(
                channel=_PROJECT_CHANNEL, summary="Stream the events of every job in the project."
            ),
        },
        "components": {
            "schemas": _schemas(),
            "messages": {name: _message(name, model) for name, model in _MESSAGES.items()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <API key>` on the handshake.",
                },
                "ticket": {
                    "type": "httpApiKey",
                    "in": "query",
                    "name": "ticket",
                    "description": "A single-use ticket, valid 60 s by default, from "
                    "`POST /v1/fine_tuning/stream_tickets` (bearer auth, no body); for "
                    "browsers, which cannot set headers on a WebSocket. Not an API key.",
                },
            },
        },
    }
