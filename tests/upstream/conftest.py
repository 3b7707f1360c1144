"""Fixtures for upstream-engine tests: the OpenAI-wire double, and the app with it as a provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel import col, select, update

from service.db import Database
from service.engines import build_engines
from service.engines.base import Engines
from service.engines.upstream.engine import UpstreamEngine
from service.engines.upstream.models import UpstreamJob
from service.jobs.models import JobEvent
from service.settings import ProviderSettings, Settings
from tests.upstream.openai_double import OpenAIDouble

PROVIDER = "openai"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtZG91YmxlLXdlYmhvb2tz"
# Far-away dates: OpenAI's real ones would change what the suite does the day they pass.
MODELS: list[Any] = [
    {"id": "gpt-4o-mini", "shutdown_date": "2099-12-31", "training_cutoff": "2099-12-01"}
]
FAST = {
    "upstream_sync_running_seconds": 0.2,
    "upstream_sync_queued_seconds": 0.2,
    "upstream_sync_paused_seconds": 0.2,
    "upstream_timeout_seconds": 1.0,
    "upstream_lease_seconds": 3.0,
}


@pytest.fixture
async def double() -> AsyncIterator[OpenAIDouble]:
    async with OpenAIDouble(webhook_secret=WEBHOOK_SECRET) as server:
        yield server


def provider_for(double: OpenAIDouble, **extra: Any) -> ProviderSettings:
    """The double as a provider of FT_PROVIDERS."""
    fields = {
        "name": PROVIDER,
        "base_url": double.url,
        "api_key": double.api_key,
        "models": MODELS,
        "webhook_secret": WEBHOOK_SECRET,
        **extra,
    }
    return ProviderSettings.model_validate(fields)


@pytest.fixture
def settings(settings: Settings, double: OpenAIDouble) -> Settings:
    return settings.model_copy(update={"providers": [provider_for(double)], **FAST})


@pytest.fixture
def engines(settings: Settings) -> Engines:
    return build_engines(settings)


@pytest.fixture
def upstream(engines: Engines) -> UpstreamEngine:
    engine = engines.get(PROVIDER)
    assert isinstance(engine, UpstreamEngine)
    return engine


async def settle(engine: UpstreamEngine) -> None:
    """Start a pass for every due job now, and wait for all passes to end."""
    assert engine.sync is not None
    engine.sync.scan_soon()
    await engine.sync.poll_once()
    await engine.sync.drain()


async def sync_now(engine: UpstreamEngine, database: Database, job_id: str) -> None:
    """Make the job due and run a pass over it."""
    async with database.session() as session:
        await session.exec(
            update(UpstreamJob).where(col(UpstreamJob.job_id) == job_id).values(next_sync_at=0)
        )
        await session.commit()
    await settle(engine)


async def upstream_id(database: Database, job_id: str) -> str | None:
    """The provider's id of our job."""
    async with database.session() as session:
        return (
            await session.exec(select(UpstreamJob.upstream_id).where(UpstreamJob.job_id == job_id))
        ).first()


async def mirrored_events(database: Database, job_id: str) -> list[tuple[str, str]]:
    """(provider's id, message) of the job's events that came from the provider, in log order."""
    async with database.session() as session:
        rows = await session.exec(
            select(JobEvent.source_id, JobEvent.message)
            .where(JobEvent.job_id == job_id, col(JobEvent.source_id).is_not(None))
            .order_by(col(JobEvent.pk))
        )
        return [(str(s), m) for s, m in rows.all()]
