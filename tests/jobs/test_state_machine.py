"""The job status machine as a property: random client and engine actions, applied to the real
service on a real database, always agree with a small reference model of the rules."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import col, select

from service.errors import APIError
from service.jobs import engine_calls, states
from service.jobs import service as jobs
from service.jobs.models import Job, JobEvent
from tests.factories import make_file, make_job, make_tenant

ACTIONS = ["cancel", "pause", "resume", "claim", "start", "succeed", "fail", "expire", "release"]
WORKER = "w-prop"
MAX_ATTEMPTS = 3


@dataclass
class Model:
    """What the rules say the job looks like."""

    status: str = "queued"
    owner: bool = False
    expired: bool = False
    attempts: int = 0

    def apply(self, action: str) -> bool:
        """Apply an action; return False where the service must refuse it."""
        s = self.status
        if action == "cancel":
            if s == "cancelled":
                return True
            if states.is_terminal(s):
                return False
            self._finish("cancelled")
        elif action == "pause":
            if s == "paused":
                return True
            if s not in ("queued", "running"):
                return False
            self.status = "paused"
        elif action == "resume":
            if s != "paused":
                return False
            self.status = "queued"
        elif action == "claim":
            free = not self.owner or self.expired
            if (s == "queued" and free) or (s == "running" and self.expired):
                self.owner, self.expired = True, False
                self.attempts += 1
                if s == "running":
                    if self.attempts > MAX_ATTEMPTS:
                        self._finish("failed")
                    else:
                        self.status = "queued"
        elif action == "start":
            if not self.owner or s != "queued":
                return False
            self.status = "running"
        elif action == "succeed":
            if not self.owner or s != "running":
                return False
            self._finish("succeeded")
        elif action == "fail":
            if not self.owner or states.is_terminal(s):
                return False
            self._finish("failed")
        elif action == "expire":
            self.expired = self.owner
        elif action == "release":
            self.owner = self.expired = False
            self.attempts = 0
        return True

    def _finish(self, status: str) -> None:
        self.status = status
        self.owner = self.expired = False


async def _apply(database, engines, job_id: str, engine: str, action: str) -> bool:
    async with database.session() as session:
        try:
            if action == "claim":
                await engine_calls.claim_next_job(
                    session=session,
                    engine=engine,
                    worker_id=WORKER,
                    lease_seconds=60,
                    max_attempts=MAX_ATTEMPTS,
                )
            elif action in ("cancel", "pause", "resume"):
                job = (await session.exec(select(Job).where(Job.id == job_id))).one()
                await getattr(jobs, f"{action}_job")(session=session, engines=engines, job=job)
            elif action == "start":
                await engine_calls.start_job(
                    session=session,
                    job_id=job_id,
                    worker_id=WORKER,
                    hyperparameters={"n_epochs": 1},
                )
            elif action == "succeed":
                await engine_calls.succeed_job(
                    session=session,
                    job_id=job_id,
                    worker_id=WORKER,
                    organization="personal",
                    trained_tokens=1,
                    result_files=[],
                )
            elif action == "fail":
                await engine_calls.fail_job(
                    session=session, job_id=job_id, worker_id=WORKER, code="boom", message="boom"
                )
            elif action == "expire":
                await session.exec(
                    update(Job)
                    .where(col(Job.id) == job_id, col(Job.lease_owner).is_not(None))
                    .values(lease_expires_at=time.time() - 1)
                )
                await session.commit()
            elif action == "release":
                await engine_calls.release_job(session=session, job_id=job_id, worker_id=WORKER)
        except APIError:
            return False
    return True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=st.lists(st.sampled_from(ACTIONS), max_size=14))
async def test_service_follows_the_status_rules(client, database, engines, actions):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    job_id = (await make_job(client, tenant, training_file=file_id))["id"]
    engine = f"prop-{uuid.uuid4().hex[:8]}"  # this example's job is the only one it can claim
    async with database.session() as session:
        await session.exec(update(Job).where(col(Job.id) == job_id).values(engine=engine))
        await session.commit()

    model = Model()
    for action in actions:
        before = model.status
        expected = model.apply(action)
        accepted = await _apply(database, engines, job_id, engine, action)
        assert accepted == expected, (action, before, actions)
        async with database.session() as session:
            job = (await session.exec(select(Job).where(Job.id == job_id))).one()
            assert job.status == model.status, (action, before, actions)
            assert (job.finished_at is not None) == states.is_terminal(job.status)
            if job.status == "failed":
                assert job.error is not None and job.error["code"]

    async with database.session() as session:
        seqs = (
            await session.exec(
                select(JobEvent.seq).where(JobEvent.job_id == job_id).order_by(col(JobEvent.pk))
            )
        ).all()
    assert list(seqs) == list(range(1, len(seqs) + 1))  # gap-free and in insertion order


def test_transition_table_is_closed_and_terminal_states_absorb():
    statuses = set(states.TRANSITIONS)
    for source, targets in states.TRANSITIONS.items():
        assert targets <= statuses, source
        assert source not in targets
    for terminal in states.TERMINAL:
        assert states.TRANSITIONS[terminal] == frozenset()
    # Every live status can be cancelled and can fail.
    for live in statuses - states.TERMINAL:
        assert {"cancelled", "failed"} <= states.TRANSITIONS[live]
