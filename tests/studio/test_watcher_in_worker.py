"""`python -m service worker` carries the studio's watcher: with `serve` running no embedded
worker, a department model trained by that process is promoted to its alias by it too."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.engines.local_jobs import local_engine
from tests.factories import make_tenant
from tests.fake_engine import fake_engines
from tests.processes import REPO_ROOT, SHARED_DIR, service_env

EMAILS = SHARED_DIR / "data" / "emails"
pytestmark = pytest.mark.skipif(not EMAILS.is_dir(), reason=f"no sample data at {EMAILS}")


@pytest.fixture
def engines(settings, tiny_model_dir):
    return fake_engines(local_engine(settings, tiny_model_dir.parent))


async def test_a_worker_process_promotes_the_first_model_of_a_scope(
    client, database, settings, database_url, tiny_model_dir, tmp_path
):
    tenant = await make_tenant(database)
    history = [json.loads(line) for line in (EMAILS / "history.jsonl").read_text().splitlines()]
    trained = await client.post(
        "/v1/email/models/departments",
        headers=tenant.headers,
        json={
            "emails": history,
            "model": "tiny-chat",
            "departments": ["support"],
            "hyperparameters": {"n_epochs": 1, "batch_size": 8},
        },
    )
    assert trained.status_code == 200, trained.text
    job_id = trained.json()["data"][0]["job_id"]

    env = service_env(
        data_dir=str(settings.data_dir),
        database_url=database_url,
        models_dir=str(tiny_model_dir.parent),
        worker_poll_seconds="0.2",
        studio_poll_seconds="0.2",
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "service", "worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            alias = None
            for _ in range(1200):  # up to 2 minutes: start-up, training, promotion
                response = await client.get(
                    "/v1/email/aliases/department:support", headers=tenant.headers
                )
                if response.status_code == 200:
                    alias = response.json()
                    break
                await asyncio.sleep(0.1)
        finally:
            worker.terminate()
            worker.wait(timeout=20)

    job = (await client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers)).json()
    assert alias is not None, log_path.read_text(errors="replace")[-3000:]
    assert job["status"] == "succeeded" and alias["model"] == job["fine_tuned_model"]
