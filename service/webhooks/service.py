"""Rules of outbound webhooks: endpoints (URL checks, secrets, rotation) and the messages a job's
final status puts in the outbox, in the same transaction as the status."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service import pagination
from service.db import flag_commit
from service.errors import InvalidRequest, NotFound
from service.ids import new_id, now
from service.webhooks import targets
from service.webhooks.models import WebhookEndpoint, WebhookMessage
from service.webhooks.schemas import (
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from service.webhooks.signing import new_secret

# The commit-hook topic that wakes this process's sender when a message is written.
WEBHOOKS_TOPIC = "ft_webhooks"
MAX_ENDPOINTS = 50  # a project's endpoints; each job's end is sent to every one of them
ROTATION_GRACE_SECONDS = 24 * 3600


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that may not receive webhooks, with the reason (400, param `url`)."""
    try:
        await targets.resolve(url, allow_private=allow_private)
    except targets.UnsafeTarget as error:
        raise InvalidRequest(str(error), param="url", code="invalid_webhook_url") from None


async def create_endpoint(
    *, session: AsyncSession, project_id: str, body: WebhookEndpointCreate, allow_private: bool
) -> WebhookEndpoint:
    """Register an endpoint with a fresh signing secret."""
    await check_url(body.url, allow_private=allow_private)
    count = (
        await session.exec(
            select(func.count()).where(col(WebhookEndpoint.project_id) == project_id)
        )
    ).one()
    if count >= MAX_ENDPOINTS:
        raise InvalidRequest(
            f"A project may have at most {MAX_ENDPOINTS} webhook endpoints; delete one first.",
            code="too_many_webhook_endpoints",
        )
    at = now()
    row = WebhookEndpoint(
        id=new_id("we_"),
        project_id=project_id,
        name=body.name,
        url=body.url,
        event_types=_unique(body.event_types),
        secret=new_secret(),
        created_at=at,
        updated_at=at,
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


async def get_endpoint(
    *, session: AsyncSession, project_id: str, endpoint_id: str
) -> WebhookEndpoint:
    """Return the project's endpoint, or 404 (another project's looks absent)."""
    row = (
        await session.exec(
            select(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.project_id == project_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(
            f"No webhook endpoint found with id '{endpoint_id}'.",
            param="webhook_endpoint_id",
            code="webhook_endpoint_not_found",
        )
    return row


async def list_endpoints(
    *, session: AsyncSession, project_id: str, after: str | None, limit: int
) -> tuple[list[WebhookEndpoint], bool]:
    """Return a page of the project's endpoints, newest first."""
    return await pagination.page(
        session,
        WebhookEndpoint,
        where=[col(WebhookEndpoint.project_id) == project_id],
        after=after,
        limit=limit,
    )


async def update_endpoint(
    *, session: AsyncSession, row: WebhookEndpoint, body: WebhookEndpointUpdate, allow_private: bool
) -> WebhookEndpoint:
    """Change the name, URL or event types; `updated_at` moves only when something changed."""
    changes: dict[str, object] = {}
    if body.name is not None and body.name != row.name:
        changes["name"] = body.name
    if body.url is not None and body.url != row.url:
        await check_url(body.url, allow_private=allow_private)
        changes["url"] = body.url
    if body.event_types is not None and _unique(body.event_types) != row.event_types:
        changes["event_types"] = _unique(body.event_types)
    if changes:
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = now()
        session.add(row)
        await session.commit()
        await session.refresh(row)
    return row


async def delete_endpoint(*, session: AsyncSession, row: WebhookEndpoint) -> None:
    """Remove the endpoint and the messages still waiting for it."""
    await session.delete(row)
    await session.commit()


async def rotate_secret(
    *, session: AsyncSession, row: WebhookEndpoint, keep_old: bool
) -> WebhookEndpoint:
    """Give the endpoint a new secret; the old one keeps signing for 24 h if asked."""
    at = now()
    row.previous_secret = row.secret if keep_old else None
    row.previous_secret_expires_at = at + ROTATION_GRACE_SECONDS if keep_old else None
    row.secret = new_secret()
    row.updated_at = at
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


def signing_keys(row: WebhookEndpoint, at: int) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one during
    its grace period."""
    keys = [row.secret]
    expires = row.previous_secret_expires_at
    if row.previous_secret and expires is not None and at < expires:
        keys.append(row.previous_secret)
    return keys


def event_body(*, event_id: str, event_type: str, created_at: int, job_id: str) -> str:
    """The JSON body OpenAI sends for a fine-tuning job event (reference §7)."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "created_at": created_at,
            "type": event_type,
            "data": {"id": job_id},
        },
        separators=(",", ":"),
    )


async def enqueue_job_event(
    session: AsyncSession, *, project_id: str, job_id: str, status: str, at: int
) -> int:
    """Put `fine_tuning.job.<status>` in the outbox of every endpoint of the project that takes
    it (not committed: the caller's transaction is the one that changes the status)."""
    event_type = f"fine_tuning.job.{status}"
    endpoints = (
        await session.exec(
            select(WebhookEndpoint).where(col(WebhookEndpoint.project_id) == project_id)
        )
    ).all()
    receivers = [e for e in endpoints if event_type in e.event_types]
    if not receivers:
        return 0
    event_id = new_id("evt_")
    body = event_body(event_id=event_id, event_type=event_type, created_at=at, job_id=job_id)
    for endpoint in receivers:
        session.add(
            WebhookMessage(
                id=new_id("wh_"),
                endpoint_id=endpoint.id,
                project_id=project_id,
                event_id=event_id,
                event_type=event_type,
                payload=body,
                status="pending",
                created_at=at,
                next_attempt_at=float(at),
            )
        )
    flag_commit(session, WEBHOOKS_TOPIC)
    return len(receivers)


async def add_test_message(
    *, session: AsyncSession, row: WebhookEndpoint, event_type: str
) -> WebhookMessage:
    """Record a sample delivery of `event_type` for the endpoint (sent at once, never retried)."""
    at = now()
    event_id = new_id("evt_")
    message = WebhookMessage(
        id=new_id("wh_"),
        endpoint_id=row.id,
        project_id=row.project_id,
        event_id=event_id,
        event_type=event_type,
        payload=event_body(
            event_id=event_id, event_type=event_type, created_at=at, job_id="ftjob-test"
        ),
        is_test=True,
        status="pending",
        created_at=at,
    )
    session.add(message)
    await session.commit()
    await session.refresh(message)
    return message


async def list_deliveries(
    *,
    session: AsyncSession,
    row: WebhookEndpoint,
    after: str | None,
    limit: int,
    status: str | None,
) -> tuple[list[WebhookMessage], bool]:
    """Return a page of the endpoint's deliveries, newest first, optionally of one status."""
    where = [col(WebhookMessage.endpoint_id) == row.id]
    if status is not None:
        where.append(col(WebhookMessage.status) == status)
    return await pagination.page(session, WebhookMessage, where=where, after=after, limit=limit)


def _unique(values: Sequence[str]) -> list[str]:
    """The values in their first order, each once."""
    return list(dict.fromkeys(values))
