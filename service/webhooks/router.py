"""HTTP routes of outbound webhooks: `/v1/webhook_endpoints` and `/v1/webhook_event_types`
(OpenAI's, as the SDK's `client.webhooks` calls them), and each endpoint's deliveries."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from service.deps import CallerDep, SessionDep, SettingsDep
from service.errors import InvalidRequest
from service.webhooks import service
from service.webhooks.dispatcher import Dispatcher
from service.webhooks.models import WebhookEndpoint
from service.webhooks.schemas import (
    EVENT_TYPES,
    DeletedWebhookEndpoint,
    WebhookDeliveryList,
    WebhookDeliveryObject,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointObject,
    WebhookEndpointTestResult,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
    WebhookEventTypeList,
    WebhookRotateSecret,
    WebhookTest,
)

router = APIRouter(prefix="/v1", tags=["Webhooks"])

EndpointIdPath = Annotated[str, Path(max_length=64, examples=["we_abc123"])]


async def _owned_endpoint(
    webhook_endpoint_id: EndpointIdPath, caller: CallerDep, session: SessionDep
) -> WebhookEndpoint:
    return await service.get_endpoint(
        session=session, project_id=caller.project_id, endpoint_id=webhook_endpoint_id
    )


EndpointDep = Annotated[WebhookEndpoint, Depends(_owned_endpoint)]


def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.webhooks
    return dispatcher


@router.post(
    "/webhook_endpoints",
    operation_id="createWebhookEndpoint",
    summary="Create a webhook endpoint",
    response_model=WebhookEndpointWithSecret,
)
async def create_webhook_endpoint(
    body: WebhookEndpointCreate, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> WebhookEndpointWithSecret:
    """Send this project's chosen events to `url`, signed (Standard Webhooks) with the secret
    answered here, and only here and at rotation. The URL must use https and resolve to public
    addresses."""
    row = await service.create_endpoint(
        session=session,
        project_id=caller.project_id,
        body=body,
        allow_private=settings.webhooks_allow_private,
    )
    return WebhookEndpointWithSecret.with_secret(row)


@router.get(
    "/webhook_endpoints",
    operation_id="listWebhookEndpoints",
    summary="List webhook endpoints",
    response_model=WebhookEndpointList,
)
async def list_webhook_endpoints(
    caller: CallerDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> WebhookEndpointList:
    """The project's endpoints, newest first."""
    rows, has_more = await service.list_endpoints(
        session=session, project_id=caller.project_id, after=after, limit=limit
    )
    return WebhookEndpointList.of(
        [WebhookEndpointObject.from_row(r) for r in rows], has_more=has_more
    )


@router.get(
    "/webhook_endpoints/{webhook_endpoint_id}",
    operation_id="retrieveWebhookEndpoint",
    summary="Retrieve a webhook endpoint",
    response_model=WebhookEndpointObject,
)
async def retrieve_webhook_endpoint(row: EndpointDep) -> WebhookEndpointObject:
    """One endpoint (its secret only as a hint)."""
    return WebhookEndpointObject.from_row(row)


@router.post(
    "/webhook_endpoints/{webhook_endpoint_id}",
    operation_id="updateWebhookEndpoint",
    summary="Update a webhook endpoint",
    response_model=WebhookEndpointObject,
)
async def update_webhook_endpoint(
    row: EndpointDep, body: WebhookEndpointUpdate, session: SessionDep, settings: SettingsDep
) -> WebhookEndpointObject:
    """Change the name, URL or event types (a new URL is checked as at creation)."""
    row = await service.update_endpoint(
        session=session, row=row, body=body, allow_private=settings.webhooks_allow_private
    )
    return WebhookEndpointObject.from_row(row)


@router.delete(
    "/webhook_endpoints/{webhook_endpoint_id}",
    operation_id="deleteWebhookEndpoint",
    summary="Delete a webhook endpoint",
    response_model=DeletedWebhookEndpoint,
)
async def delete_webhook_endpoint(row: EndpointDep, session: SessionDep) -> DeletedWebhookEndpoint:
    """Remove the endpoint; deliveries still waiting for it are dropped."""
    endpoint_id = row.id
    await service.delete_endpoint(session=session, row=row)
    return DeletedWebhookEndpoint(id=endpoint_id)


@router.post(
    "/webhook_endpoints/{webhook_endpoint_id}/rotate_secret",
    operation_id="rotateWebhookEndpointSecret",
    summary="Rotate a webhook endpoint's secret",
    response_model=WebhookEndpointWithSecret,
)
async def rotate_webhook_endpoint_secret(
    row: EndpointDep, session: SessionDep, body: WebhookRotateSecret | None = None
) -> WebhookEndpointWithSecret:
    """Give the endpoint a new signing secret; with `keep_old_secret_active_for_24_hours`,
    deliveries carry a signature by each secret for a day, so receivers can switch over."""
    keep = body is not None and body.keep_old_secret_active_for_24_hours
    row = await service.rotate_secret(session=session, row=row, keep_old=keep)
    return WebhookEndpointWithSecret.with_secret(row)


@router.post(
    "/webhook_endpoints/{webhook_endpoint_id}/test",
    operation_id="testWebhookEndpoint",
    summary="Send a test delivery",
    response_model=WebhookEndpointTestResult,
)
async def test_webhook_endpoint(
    row: EndpointDep,
    body: WebhookTest,
    session: SessionDep,
    dispatcher: Annotated[Dispatcher, Depends(_dispatcher)],
) -> WebhookEndpointTestResult:
    """Send one signed sample event (job id `ftjob-test`) now and answer the endpoint's HTTP
    status; it is listed with the deliveries and never retried. No answer at all is a 400."""
    message = await service.add_test_message(session=session, row=row, event_type=body.event_type)
    attempt = await dispatcher.send_test(message, row)
    if attempt.status_code is None:
        raise InvalidRequest(
            f"The test delivery failed: {attempt.error}", code="webhook_endpoint_unreachable"
        )
    return WebhookEndpointTestResult(
        event_type=body.event_type, status_code=attempt.status_code, webhook_endpoint_id=row.id
    )


@router.get(
    "/webhook_endpoints/{webhook_endpoint_id}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="List an endpoint's deliveries (extension)",
    response_model=WebhookDeliveryList,
)
async def list_webhook_deliveries(
    row: EndpointDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Literal["pending", "delivered", "failed"] | None = None,
) -> WebhookDeliveryList:
    """Each event sent to the endpoint, newest first: its status, attempts, the endpoint's last
    answer or error, and when a pending one is tried next."""
    rows, has_more = await service.list_deliveries(
        session=session, row=row, after=after, limit=limit, status=status
    )
    return WebhookDeliveryList.of(
        [WebhookDeliveryObject.from_row(r) for r in rows], has_more=has_more
    )


@router.get(
    "/webhook_event_types",
    operation_id="listWebhookEventTypes",
    summary="List webhook event types",
    response_model=WebhookEventTypeList,
)
async def list_webhook_event_types(caller: CallerDep) -> WebhookEventTypeList:
    """The event types an endpoint can receive from this service."""
    return WebhookEventTypeList(data=list(EVENT_TYPES))
