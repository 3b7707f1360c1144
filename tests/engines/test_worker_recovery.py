"""A worker killed with SIGKILL mid-training: another worker resumes from the last checkpoint."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
from sqlmodel import col, select

from service.jobs.models import Job, JobEvent
from tests.engines.local_jobs import local_engine
from tests.factories import chat_file, get_job, job_method, make_file, make_job, make_tenant
from tests.fake_engine import fake_engines
from tests.processes import REPO_ROOT, service_env


@pytest.fixture
def engines(settings, tiny_model_dir):
    return fake_engines(local_engine(settings, tiny_model_dir.parent))


def start_worker(settings, database_url, tiny_model_dir, log) -> subprocess.Popen[bytes]:
    env = service_env(
        data_dir=str(settings.data_dir),
        database_url=database_url,
        models_dir=str(tiny_model_dir.parent),
        worker_lease_seconds="3",
        worker_heartbeat_seconds="0.5",
        worker_poll_seconds="0.2",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "service", "worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )


async def events(database, job_id) -> list[JobEvent]:
    async with database.session() as session:
        rows = await session.exec(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.seq))
        )
        return list(rows.all())


async def wait_until(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_killed_worker_is_recovered_from_its_checkpoint(
    client, database, settings, database_url, tiny_model_dir, tmp_path
):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    created = await make_job(
        client,
        tenant,
        model="tiny-chat",
        training_file=file_id,
        method=job_method(n_epochs=6, batch_size=1, learning_rate_multiplier=10),
    )
    job_id = created["id"]
    log = (tmp_path / "workers.log").open("wb")
    first = start_worker(settings, database_url, tiny_model_dir, log)
    second = None
    try:

        async def first_checkpoint() -> bool:
            return any(
                e.message.startswith("Checkpoint created") for e in await events(database, job_id)
            )

        await wait_until(first_checkpoint, 120, "the first checkpoint")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        second = start_worker(settings, database_url, tiny_model_dir, log)

        async def finished() -> bool:
            async with database.session() as session:
                job = (await session.exec(select(Job).where(Job.id == job_id))).one()
                return job.status in ("succeeded", "failed")

        await wait_until(finished, 180, "the recovered job to finish")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        log.close()

    log_text = (tmp_path / "workers.log").read_text(errors="replace")
    job = await get_job(client, tenant, job_id)
    assert job["status"] == "succeeded", (job["error"], log_text[-3000:])
    rows = await events(database, job_id)
    assert [e.seq for e in rows] == list(range(1, len(rows) + 1))  # gap-free, in order
    messages = [e.message for e in rows]
    assert "Fine-tuning job interrupted; it will resume from its last checkpoint" in messages
    steps = [e.data["step"] for e in rows if e.type == "metrics"]
    assert steps == list(range(1, 73))  # every step once: 12 per epoch, 6 epochs
