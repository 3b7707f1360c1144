"""A provider that fails 30% of calls (429 with Retry-After, 500, timeouts, dropped connections)
and repeats and shuffles events: every job still ends as it did there, with its events once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlmodel import col, select

from service.files.models import File
from tests.factories import chat_file, make_file, make_tenant
from tests.upstream.conftest import mirrored_events, upstream_id
from tests.upstream.openai_double import Faults, OpenAIDouble

JOBS = 20
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
async def double():
    faults = Faults(rate=0.3, duplicate_events=True, shuffle_events=True, seed=20261202)
    async with OpenAIDouble(faults=faults) as server:
        yield server


async def _retry(call, attempts: int = 20):
    """A client's own retry of one of our routes while the provider is down (503)."""
    for _ in range(attempts):
        response = await call()
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.2)
    raise AssertionError("the provider never answered")


async def test_twenty_jobs_through_a_failing_provider_end_right_with_their_events_once(
    client, database, double, upstream
):
    tenant = await make_tenant(database)
    training = await make_file(client, tenant, chat_file(10))
    expected: dict[str, str] = {}
    for i in range(JOBS):
        outcome = "failed" if i % 5 == 1 else "succeeded"
        metadata = {"double_outcome": outcome, "n": str(i)}
        response = await client.post(
            "/v1/fine_tuning/jobs",
            headers=tenant.headers,
            json={"model": "gpt-4o-mini", "training_file": training, "metadata": metadata},
        )
        assert response.status_code == 200, response.text
        expected[response.json()["id"]] = outcome

    # Some are cancelled here once they exist there, through the failing provider.
    to_cancel = list(expected)[2::5]
    for job_id in to_cancel:
        while await upstream_id(database, job_id) is None:
            await asyncio.sleep(0.05)
        cancelled = await _retry(
            lambda job_id=job_id: client.post(
                f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=tenant.headers
            )
        )
        assert cancelled.json().get("status") == "cancelled", cancelled.text
        expected[job_id] = "cancelled"
    double.tick_every(0.1)

    async def all_final() -> bool:
        for job_id in expected:
            job = await client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers)
            remote = await upstream_id(database, job_id)
            if job.json()["status"] not in FINAL or remote is None:
                return False
            if double.jobs[remote].body["status"] not in FINAL:
                return False
        return True

    deadline = asyncio.get_running_loop().time() + 120
    while not await all_final():
        assert asyncio.get_running_loop().time() < deadline, "jobs still running"
        await asyncio.sleep(0.3)
    double.stop_ticking()
    double.faults.rate = 0.0  # a last look, with nothing failing, changes nothing
    await asyncio.sleep(0.5)
    await upstream.sync.drain()

    remotes = set()
    for job_id, outcome in expected.items():
        job = (await client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers)).json()
        remote = await upstream_id(database, job_id)
        remotes.add(remote)
        there = double.jobs[remote]
        assert job["status"] == there.body["status"] == outcome, (job_id, job["status"])
        mirrored = await mirrored_events(database, job_id)
        # Every event of the provider's log once, however often and in whatever order it came.
        assert Counter(mirrored) == Counter((e["id"], e["message"]) for e in there.events)
        if outcome == "succeeded":
            assert job["fine_tuned_model"] == there.body["fine_tuned_model"]
            assert len(job["result_files"]) == 1
        if outcome == "failed":
            assert job["error"]["code"] == "invalid_training_file"
    # One job there per job here, one upload of the training file, each result fetched once.
    assert len(double.jobs) == JOBS and len(remotes) == JOBS
    assert [f["filename"] for f in double.files.values() if f["purpose"] == "fine-tune"] == [
        f"{training}.jsonl"
    ]
    async with database.session() as session:
        results = (
            await session.exec(select(File.id).where(col(File.purpose) == "fine-tune-results"))
        ).all()
    assert len(results) == sum(1 for o in expected.values() if o == "succeeded")
    assert sum(double.calls.values()) > 0
