"""The jobs-service functions an engine calls, tested directly on a real database."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from service.checkpoints.models import Checkpoint
from service.jobs import engine_calls, lifecycle
from service.jobs.models import Job, JobEvent
from service.models.models import FineTunedModel
from tests.factories import make_file, make_job, make_tenant
from tests.fake_engine import FAKE

W = "worker-a"


async def claim(database, worker=W, engine=FAKE):
    async with database.session() as session:
        return await engine_calls.claim_next_job(
            session=session, engine=engine, worker_id=worker, lease_seconds=60
        )


async def running_job(client, database, tenant) -> dict:
    """Create a job, claim it as worker W and start it."""
    job = await make_job(client, tenant)
    await claim(database)
    async with database.session() as session:
        await engine_calls.start_job(
            session=session, job_id=job["id"], worker_id=W, hyperparameters={}
        )
    return job


async def messages(database, job_id):
    async with database.session() as session:
        rows = await session.exec(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.seq))
        )
        return [e.message for e in rows.all()]


async def reload(database, job_id) -> Job:
    async with database.session() as session:
        return (await session.exec(select(Job).where(Job.id == job_id))).one()


async def test_claim_takes_the_oldest_queued_job_once(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    first = await make_job(client, tenant, training_file=file_id)
    second = await make_job(client, tenant, training_file=file_id)
    assert (await claim(database)).id == first["id"]
    assert (await claim(database, worker="worker-b")).id == second["id"]
    assert await claim(database, worker="worker-c") is None
    assert await claim(database, engine="local") is None


async def test_a_whole_run_as_openai_reports_it(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant, suffix="emails")
    claimed = await claim(database)
    async with database.session() as session:
        started = await engine_calls.start_job(
            session=session,
            job_id=claimed.id,
            worker_id=W,
            hyperparameters={"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 1.8},
            estimated_finish=int(time.time()) + 60,
        )
        assert started.status == "running"
        await engine_calls.append_metrics(
            session=session,
            job_id=job["id"],
            worker_id=W,
            metrics={
                "step": 1,
                "total_steps": 4,
                "train_loss": 1.2345,
                "train_mean_token_accuracy": 0.5,
                "valid_loss": 1.5,
            },
        )
        names = []
        removed: list[str] = []
        for step in (1, 2, 3, 4):
            checkpoint, gone = await engine_calls.add_checkpoint(
                session=session,
                job_id=job["id"],
                worker_id=W,
                organization="personal",
                step_number=step,
                metrics={"train_loss": 1.0 / step},
                location=f"/ckpt/{step}",
            )
            names.append(checkpoint.fine_tuned_model_checkpoint)
            removed += gone
        done = await engine_calls.succeed_job(
            session=session,
            job_id=job["id"],
            worker_id=W,
            organization="personal",
            trained_tokens=4321,
            result_files=["file-results"],
            location="/adapter",
        )
    assert removed == ["/ckpt/1"]  # only the last three checkpoints are kept
    assert names[0].startswith("ft:gpt-4o-mini-2024-07-18:personal:emails:")
    assert names[0].endswith(":ckpt-step-1")

    wire = (await client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=tenant.headers)).json()
    assert wire["status"] == "succeeded" and wire["fine_tuned_model"] == done.fine_tuned_model
    assert wire["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:personal:emails:")
    assert wire["trained_tokens"] == 4321 and wire["result_files"] == ["file-results"]
    assert wire["hyperparameters"] == {
        "n_epochs": 3,
        "batch_size": 2,
        "learning_rate_multiplier": 1.8,
    }
    assert wire["finished_at"] is not None and wire["estimated_finish"] is None

    log = await messages(database, job["id"])
    assert log[3:] == [
        "Fine-tuning job started",
        "Step 1/4: training loss=1.23, validation loss=1.50",
        *(
            f"Checkpoint created at step {s} with Snapshot ID: {n}"
            for s, n in zip((1, 2, 3, 4), names, strict=True)
        ),
        f"New fine-tuned model created: {done.fine_tuned_model}",
        "The job has successfully completed",
    ]
    checkpoints = (
        await client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", headers=tenant.headers)
    ).json()
    assert [c["step_number"] for c in checkpoints["data"]] == [4, 3, 2]
    assert checkpoints["data"][0]["metrics"] == {"step": 4, "train_loss": 0.25}
    assert checkpoints["data"][0]["id"].startswith("ftckpt_")
    async with database.session() as session:
        model = (await session.exec(select(FineTunedModel))).one()
    assert model.location == "/adapter" and model.project_id == tenant.project_id


async def test_metrics_event_carries_openai_fields(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    async with database.session() as session:
        metrics = {
            "step": 2,
            "total_steps": 9,
            "train_loss": 0.5,
            "train_mean_token_accuracy": 0.75,
            "full_valid_loss": 0.25,
        }
        await engine_calls.append_metrics(
            session=session, job_id=job["id"], worker_id=W, metrics=metrics
        )
    events = (
        await client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=tenant.headers)
    ).json()["data"]
    assert events[0]["type"] == "metrics" and events[0]["data"] == metrics
    assert events[0]["message"] == "Step 2/9: training loss=0.50, full validation loss=0.25"


async def test_failure_records_openai_error(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    async with database.session() as session:
        await engine_calls.fail_job(
            session=session,
            job_id=job["id"],
            worker_id=W,
            code="out_of_memory",
            message="The GPU ran out of memory.",
        )
    wire = (await client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=tenant.headers)).json()
    assert wire["status"] == "failed"
    assert wire["error"] == {
        "code": "out_of_memory",
        "message": "The GPU ran out of memory.",
        "param": None,
    }
    log = await messages(database, job["id"])
    assert log[-1] == "Fine-tuning job failed: The GPU ran out of memory."


async def test_cancel_wins_over_a_late_engine_report(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    async with database.session() as session:
        status = await engine_calls.heartbeat(
            session=session, job_id=job["id"], worker_id=W, lease_seconds=60
        )
        assert status == "running"
    await client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    async with database.session() as session:
        # Cancelling released the lease, so the engine learns it lost the job.
        with pytest.raises(engine_calls.LeaseLost):
            await engine_calls.heartbeat(
                session=session, job_id=job["id"], worker_id=W, lease_seconds=60
            )
        with pytest.raises(engine_calls.LeaseLost):
            await engine_calls.succeed_job(
                session=session,
                job_id=job["id"],
                worker_id=W,
                organization="personal",
                trained_tokens=1,
                result_files=[],
            )
    assert (await reload(database, job["id"])).status == "cancelled"


async def test_pause_is_seen_by_the_engine_and_resume_requeues(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    await client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause", headers=tenant.headers)
    async with database.session() as session:
        status = await engine_calls.heartbeat(
            session=session, job_id=job["id"], worker_id=W, lease_seconds=60
        )
        assert status == "paused"
        await engine_calls.release_job(session=session, job_id=job["id"], worker_id=W)
    await client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume", headers=tenant.headers)
    again = await claim(database, worker="worker-b")
    assert again is not None and again.id == job["id"] and again.attempts == 1


async def test_expired_lease_is_recovered_then_fails_after_three_attempts(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)

    async def crash() -> None:
        async with database.session() as session:
            await session.exec(
                update(Job).where(col(Job.id) == job["id"]).values(lease_expires_at=time.time() - 1)
            )
            await session.commit()

    for attempt in (1, 2, 3):
        claimed = await claim(database, worker=f"w{attempt}")
        assert claimed is not None and claimed.attempts == attempt
        async with database.session() as session:
            await engine_calls.start_job(
                session=session, job_id=job["id"], worker_id=f"w{attempt}", hyperparameters={}
            )
        await crash()
    assert await claim(database, worker="w4") is None
    failed = await reload(database, job["id"])
    assert failed.status == "failed" and failed.error["code"] == "worker_lost"
    log = await messages(database, job["id"])
    assert log.count("Fine-tuning job interrupted; it will resume from its last checkpoint") == 2


async def test_concurrent_claims_never_share_a_job(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    created = {(await make_job(client, tenant, training_file=file_id))["id"] for _ in range(6)}
    claimed = await asyncio.gather(*(claim(database, worker=f"w{i}") for i in range(10)))
    taken = [job.id for job in claimed if job is not None]
    assert len(taken) == len(set(taken))
    assert set(taken) == created
    async with database.session() as session:
        owners = (await session.exec(select(Job.lease_owner))).all()
    assert len(set(owners)) == 6


async def test_checkpoint_rows_are_per_job(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    async with database.session() as session:
        checkpoint, _ = await engine_calls.add_checkpoint(
            session=session,
            job_id=job["id"],
            worker_id=W,
            organization="personal",
            step_number=10,
            metrics={},
        )
        stored = (await session.exec(select(Checkpoint))).one()
    assert stored.id == checkpoint.id and stored.project_id == tenant.project_id


async def test_cancel_racing_the_engines_success_has_exactly_one_winner(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    for _ in range(5):
        job = await make_job(client, tenant, training_file=file_id)
        await claim(database)
        async with database.session() as session:
            await engine_calls.start_job(
                session=session, job_id=job["id"], worker_id=W, hyperparameters={}
            )

        async def succeed(job_id: str) -> str:
            async with database.session() as session:
                try:
                    await engine_calls.succeed_job(
                        session=session,
                        job_id=job_id,
                        worker_id=W,
                        organization="personal",
                        trained_tokens=1,
                        result_files=[],
                    )
                except (engine_calls.LeaseLost, lifecycle.ConcurrentUpdate):
                    return "lost"
                return "won"

        cancel, outcome = await asyncio.gather(
            client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers),
            succeed(job["id"]),
        )
        final = (await reload(database, job["id"])).status
        if outcome == "won":
            assert final == "succeeded" and cancel.status_code == 400
        else:
            assert final == "cancelled" and cancel.status_code == 200
        assert cancel.status_code != 500
