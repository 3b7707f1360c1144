"""Helpers for local-engine tests: the engine on a models folder, and a job created through the
API and trained by a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.engines.local.engine import LocalEngine
from service.engines.local.models import discover
from service.engines.local.worker import LocalWorker
from service.settings import Settings
from tests.factories import Tenant, get_job, make_job


def local_engine(settings: Settings, models_dir: Path) -> LocalEngine:
    """The local engine with the base models found in `models_dir`."""
    return LocalEngine(settings=settings, models=discover(models_dir, {}))


async def train_job(
    client: httpx.AsyncClient, tenant: Tenant, worker: LocalWorker, **body: Any
) -> dict[str, Any]:
    """Create a job, let `worker` claim and train it, check that it succeeded and return it."""
    created = await make_job(client, tenant, **body)
    assert await worker.poll_once() is True
    job = await get_job(client, tenant, created["id"])
    assert job["status"] == "succeeded", job["error"]
    return job
