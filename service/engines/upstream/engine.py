"""The upstream engine of one provider: jobs created there and mirrored here, controls and
completions forwarded, webhooks taken in.

Our ids stay ours: a job, its events and its checkpoints get this service's ids, and the
provider's ids are kept beside them (`UpstreamJob`, `JobEvent.source_id`). Fine-tuned models and
checkpoints keep the provider's names, which are the names clients call them by.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import openai
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update

from service.db import Database
from service.engines.base import ClientAction, Engine, ModelTarget
from service.engines.upstream.models import UpstreamJob, WebhookDelivery
from service.engines.upstream.provider import (
    Redactor,
    as_api_error,
    make_client,
    provider_models,
)
from service.engines.upstream.sync import UpstreamSync
from service.errors import Conflict, InvalidRequest, NotFound
from service.ids import now
from service.inference.schemas import ChatCompletionRequest
from service.jobs.models import Job
from service.models.registry import BaseModelSpec
from service.poller import PollStep
from service.settings import ProviderSettings, Settings

# Webhooks older (or newer) than this are refused, as the Standard Webhooks scheme advises.
WEBHOOK_TOLERANCE_SECONDS = 300


class UpstreamEngine(Engine):
    """Runs jobs on one OpenAI-compatible provider, through the official openai SDK."""

    def __init__(self, *, provider: ProviderSettings, settings: Settings) -> None:
        self.name = provider.name
        self.provider = provider
        self.settings = settings
        self.client = make_client(provider, settings)
        self.redact = Redactor(provider)
        self._models = provider_models(provider)
        self._sync: UpstreamSync | None = None

    def base_models(self) -> Sequence[BaseModelSpec]:
        """The models named in the provider's configuration."""
        return self._models

    def base_spec(self, name: str) -> BaseModelSpec | None:
        """Return the provider's base model called `name` (an id or an alias)."""
        return next((m for m in self._models if name == m.id or name in m.aliases), None)

    def poll_steps(self, *, database: Database) -> list[PollStep]:
        """The sync of this provider's jobs."""
        self._sync = UpstreamSync(engine=self, database=database)
        return [self._sync]

    @property
    def sync(self) -> UpstreamSync | None:
        """The sync step of this process, once `poll_steps` made it."""
        return self._sync

    # ------------------------------------------------------------ controls

    async def control(self, job: Job, action: ClientAction) -> bool:
        """Cancel, pause or resume the job at the provider; its log then tells of it."""
        async with self._database().session() as session:
            link = (
                await session.exec(select(UpstreamJob).where(UpstreamJob.job_id == job.id))
            ).first()
        if link is not None and link.imported:
            raise InvalidRequest(
                f"Fine-tuning job {job.id} was imported from provider {self.name}; it is "
                "read-only here.",
                code="job_imported",
            )
        upstream_id = link.upstream_id if link else None
        if upstream_id is None:
            return False  # not created there yet: the sync reads the status before it does
        jobs = self.client.fine_tuning.jobs
        call = {"cancel": jobs.cancel, "pause": jobs.pause, "resume": jobs.resume}[action]
        try:
            await call(upstream_id)
        except openai.OpenAIError as error:
            # A retry of a call whose first answer was lost finds the job already there.
            if not await self._already(upstream_id, action):
                raise as_api_error(error, self.name, self.redact) from None
        if self._sync is not None:
            self._sync.start(job.id)  # the provider's event for it, without waiting
        return True

    async def _already(self, upstream_id: str, action: ClientAction) -> bool:
        reached = {"cancel": {"cancelled"}, "pause": {"paused"}, "resume": {"queued", "running"}}
        try:
            job = await self.client.fine_tuning.jobs.retrieve(upstream_id)
        except openai.OpenAIError:
            return False
        return job.status in reached[action]

    def _database(self) -> Database:
        if self._sync is None:
            raise RuntimeError("the upstream engine is not started (no poller)")
        return self._sync.database

    # ------------------------------------------------------------ completions

    def _request(self, target: ModelTarget, request: ChatCompletionRequest) -> dict[str, Any]:
        params = request.model_dump(
            mode="json", exclude_none=True, exclude={"model", "stream", "stream_options"}
        )
        params["model"] = target.name
        return params

    async def complete(self, target: ModelTarget, request: ChatCompletionRequest) -> dict[str, Any]:
        """Forward the request to the provider and answer with its completion."""
        try:
            completion = await self.client.chat.completions.create(**self._request(target, request))
        except openai.OpenAIError as error:
            raise as_api_error(error, self.name, self.redact) from None
        answer: dict[str, Any] = completion.to_dict()
        return answer

    async def complete_stream(
        self, target: ModelTarget, request: ChatCompletionRequest
    ) -> AsyncGenerator[dict[str, Any]]:
        """Forward the request with `stream: true` and pass the provider's chunks on."""
        try:
            params = self._request(target, request)
            if request.stream_options:
                params["stream_options"] = request.stream_options.model_dump()
            stream = await self.client.chat.completions.create(**params, stream=True)
            async with stream:
                async for chunk in stream:
                    yield chunk.to_dict()
        except openai.OpenAIError as error:
            raise as_api_error(error, self.name, self.redact) from None

    async def delete_model(self, target: ModelTarget) -> None:
        """Delete the fine-tuned model at the provider (one already gone there is fine)."""
        try:
            await self.client.models.delete(target.name)
        except openai.NotFoundError:
            pass
        except openai.OpenAIError as error:
            raise as_api_error(error, self.name, self.redact) from None

    # ------------------------------------------------------------ webhooks

    async def receive_webhook(
        self, *, database: Database, payload: bytes, headers: Mapping[str, str]
    ) -> None:
        """Verify a Standard Webhooks delivery, refuse a replay, and sync its job at once."""
        if self.provider.webhook_secret is None:
            raise NotFound(f"No webhooks are taken for '{self.name}'.", code="webhook_not_found")
        try:
            self.client.webhooks.verify_signature(
                payload, headers, tolerance=WEBHOOK_TOLERANCE_SECONDS
            )
        except (openai.InvalidWebhookSignatureError, ValueError) as error:
            raise InvalidRequest(
                "The webhook's signature is invalid, or its timestamp is more than "
                f"{WEBHOOK_TOLERANCE_SECONDS} s away.",
                code="invalid_webhook_signature",
            ) from error
        try:
            event = json.loads(payload)
            upstream_id = event["data"]["id"]
        except (ValueError, KeyError, TypeError):
            raise InvalidRequest("The webhook's body is not an event.") from None
        async with database.session() as session:
            session.add(
                WebhookDelivery(
                    provider=self.name, webhook_id=headers["webhook-id"], received_at=now()
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                raise Conflict(
                    "This webhook delivery was already received.", code="webhook_replayed"
                ) from None
            link = (
                await session.exec(
                    select(UpstreamJob).where(
                        UpstreamJob.provider == self.name,
                        UpstreamJob.upstream_id == str(upstream_id),
                    )
                )
            ).first()
            if link is None:
                return  # a job of the account that this service did not create
            await session.exec(
                update(UpstreamJob).where(col(UpstreamJob.pk) == link.pk).values(next_sync_at=0)
            )
            await session.commit()
        if self._sync is not None:
            self._sync.start(link.job_id)

    async def aclose(self) -> None:
        """Stop the passes under way and close the HTTP client."""
        if self._sync is not None:
            await self._sync.close()
        await self.client.close()
