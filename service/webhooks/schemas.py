"""Wire shapes of `/v1/webhook_endpoints` and `/v1/webhook_event_types` (reference §2.8 and §7),
as the `openai` SDK's `client.webhooks` sends and parses them; deliveries are our extension."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from service.pagination import ListPage
from service.webhooks.models import WebhookEndpoint, WebhookMessage
from service.wire import RequestModel, WireModel

# The events this service sends: a fine-tuning job's final status (OpenAI sends none for
# `running` or `paused` either).
EventType = Literal[
    "fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

URL_DESCRIPTION = "The HTTPS URL that receives deliveries; it must resolve to public addresses."
URL_EXAMPLE = "https://mail.example.com/hooks/openai"


class WebhookEndpointCreate(RequestModel):
    """A new endpoint: its name, URL and the event types it receives."""

    event_types: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    name: str = Field(min_length=1, max_length=255)
    url: str = Field(
        min_length=1, max_length=2048, description=URL_DESCRIPTION, examples=[URL_EXAMPLE]
    )


class WebhookEndpointUpdate(RequestModel):
    """New values for an endpoint; fields left out keep theirs."""

    event_types: list[EventType] | None = Field(
        default=None, min_length=1, max_length=len(EVENT_TYPES)
    )
    name: str | None = Field(default=None, min_length=1, max_length=255)
    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description=URL_DESCRIPTION,
        examples=[URL_EXAMPLE],
    )


class WebhookRotateSecret(RequestModel):
    """Whether the old secret keeps signing (beside the new one) for 24 hours."""

    keep_old_secret_active_for_24_hours: bool = False


class WebhookTest(RequestModel):
    """The event type of the sample delivery."""

    event_type: EventType


class WebhookEndpointObject(WireModel):
    """OpenAI's `webhook_endpoint` object (the secret itself is never shown again)."""

    id: str = Field(examples=["we_abc123"])
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret_hint: str = Field(examples=["whsec_…Xk3Q"])
    updated_at: int

    @classmethod
    def from_row(cls, row: WebhookEndpoint) -> WebhookEndpointObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            created_at=row.created_at,
            event_types=list(row.event_types),
            name=row.name,
            url=row.url,
            signing_secret_hint=secret_hint(row.secret),
            updated_at=row.updated_at,
        )


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """The endpoint with its signing secret: answered only at creation and rotation."""

    signing_secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])

    @classmethod
    def with_secret(cls, row: WebhookEndpoint) -> WebhookEndpointWithSecret:
        """Build the wire object, secret included, from its row."""
        return cls(**WebhookEndpointObject.from_row(row).model_dump(), signing_secret=row.secret)


class DeletedWebhookEndpoint(WireModel):
    """OpenAI's answer to a deletion."""

    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookEndpointTestResult(WireModel):
    """OpenAI's answer to a test: what the endpoint answered to a signed sample delivery."""

    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    event_type: str
    status_code: int
    success: Literal[True] = True
    webhook_endpoint_id: str


class WebhookEventTypeList(WireModel):
    """The event types an endpoint may receive here."""

    object: Literal["list"] = "list"
    data: list[str]


class WebhookDeliveryObject(WireModel):
    """One event sent (or being sent) to an endpoint, and how its delivery went (extension)."""

    id: str = Field(description="The `webhook-id` header, the same on every attempt.")
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    test: bool = Field(description="Sent by `POST /v1/webhook_endpoints/{id}/test`.")
    attempts: int
    created_at: int
    last_attempt_at: int | None
    last_status_code: int | None = Field(description="The endpoint's last HTTP status, if any.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: int | None = Field(description="When a pending delivery is tried next.")
    delivered_at: int | None

    @classmethod
    def from_row(cls, row: WebhookMessage) -> WebhookDeliveryObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            event_id=row.event_id,
            event_type=row.event_type,
            status=row.status,
            test=row.is_test,
            attempts=row.attempts,
            created_at=row.created_at,
            last_attempt_at=row.last_attempt_at,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            next_attempt_at=(
                int(row.next_attempt_at)
                if row.status == "pending" and row.next_attempt_at is not None
                else None
            ),
            delivered_at=row.delivered_at,
        )


def secret_hint(secret: str) -> str:
    """Show enough of a secret to tell two apart: its prefix and last four characters."""
    return f"whsec_…{secret[-4:]}"


class WebhookEndpointList(ListPage[WebhookEndpointObject]):
    """A page of webhook endpoints, newest first."""


class WebhookDeliveryList(ListPage[WebhookDeliveryObject]):
    """A page of an endpoint's deliveries, newest first."""
