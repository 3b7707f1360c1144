"""The metrics-history extension, `GET /v1/fine_tuning/jobs/{id}/metrics`, on a real database."""

from __future__ import annotations

from typing import Any

from service.db import Database
from tests.factories import Tenant, make_job, make_tenant
from tests.fake_engine import FakeRun

# What the engine logs, step by step; step 2 also has a validation loss.
STEPS: list[dict[str, Any]] = [
    {"step": 1, "total_steps": 4, "train_loss": 1.5, "train_mean_token_accuracy": 0.25},
    {
        "step": 2,
        "total_steps": 4,
        "train_loss": 1.25,
        "train_mean_token_accuracy": 0.5,
        "valid_loss": 1.75,
    },
    {"step": 3, "total_steps": 4, "train_loss": 1.0, "train_mean_token_accuracy": 0.75},
    {"step": 4, "total_steps": 4, "train_loss": 0.5, "train_mean_token_accuracy": 1},
]


def without_step(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "step"}


async def running_job(client, database: Database, tenant: Tenant) -> dict[str, Any]:
    """Create a job, then claim and start it as the test engine's worker."""
    job = await make_job(client, tenant)
    await FakeRun(database, job["id"]).start()
    return job


async def log(database: Database, job_id: str, *steps: dict[str, Any]) -> None:
    run = FakeRun(database, job_id)
    for metrics in steps:
        await run.log(**metrics)


async def succeed(database: Database, job_id: str) -> None:
    await FakeRun(database, job_id).succeed(trained_tokens=100)


async def get_metrics(client, tenant: Tenant, job_id: str, **params: Any):
    return await client.get(
        f"/v1/fine_tuning/jobs/{job_id}/metrics", headers=tenant.headers, params=params
    )


async def test_the_whole_series_by_step_after_the_job_succeeded(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    await log(database, job["id"], *STEPS)
    await succeed(database, job["id"])

    response = await get_metrics(client, tenant, job["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "fine_tuning.job.metrics"
    assert body["job_id"] == job["id"]
    assert body["total_steps"] == 4
    assert [p["step"] for p in body["data"]] == [1, 2, 3, 4]
    assert [p["metrics"] for p in body["data"]] == [without_step(m) for m in STEPS]
    assert body["data"][1]["metrics"]["valid_loss"] == 1.75
    assert "valid_loss" not in body["data"][0]["metrics"]
    assert all(isinstance(p["created_at"], int) and p["created_at"] > 0 for p in body["data"])
    assert set(body) == {"object", "job_id", "total_steps", "data"}
    assert all(set(p) == {"step", "created_at", "metrics"} for p in body["data"])

    # The job's log also holds message events; none of them is in the series.
    events = (
        await client.get(
            f"/v1/fine_tuning/jobs/{job['id']}/events",
            headers=tenant.headers,
            params={"limit": 100},
        )
    ).json()["data"]
    kinds = [e["type"] for e in events]
    assert kinds.count("metrics") == 4 and kinds.count("message") >= 3


async def test_after_step_returns_only_newer_steps(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    await log(database, job["id"], *STEPS[:2])

    first = (await get_metrics(client, tenant, job["id"])).json()
    assert [p["step"] for p in first["data"]] == [1, 2]

    await log(database, job["id"], *STEPS[2:])
    await succeed(database, job["id"])
    newer = (await get_metrics(client, tenant, job["id"], after_step=2)).json()
    assert [p["step"] for p in newer["data"]] == [3, 4]
    assert [p["metrics"] for p in newer["data"]] == [without_step(m) for m in STEPS[2:]]
    assert newer["total_steps"] == 4

    # Nothing newer: an empty series that still says how many steps the run has.
    done = (await get_metrics(client, tenant, job["id"], after_step=4)).json()
    assert done["data"] == [] and done["total_steps"] == 4
    everything = (await get_metrics(client, tenant, job["id"], after_step=0)).json()
    assert [p["step"] for p in everything["data"]] == [1, 2, 3, 4]


async def test_a_step_logged_twice_keeps_its_last_values(client, database):
    tenant = await make_tenant(database)
    job = await running_job(client, database, tenant)
    await log(
        database,
        job["id"],
        {"step": 1, "train_loss": 2.0},
        {"step": 2, "train_loss": 1.5},
        {"step": 2, "train_loss": 1.25, "phase": "train", "resumed": True},
        {"step": 3, "train_loss": 1.0},
    )

    body = (await get_metrics(client, tenant, job["id"])).json()
    # Only numbers are metrics: the string and the flag are left out.
    assert [(p["step"], p["metrics"]) for p in body["data"]] == [
        (1, {"train_loss": 2.0}),
        (2, {"train_loss": 1.25}),
        (3, {"train_loss": 1.0}),
    ]
    assert body["total_steps"] is None  # the engine never said


async def test_a_job_without_metrics_has_an_empty_series(client, database):
    tenant = await make_tenant(database)
    queued = await make_job(client, tenant)

    response = await get_metrics(client, tenant, queued["id"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "object": "fine_tuning.job.metrics",
        "job_id": queued["id"],
        "total_steps": None,
        "data": [],
    }


async def test_another_projects_job_is_not_found(client, database):
    owner = await make_tenant(database)
    job = await running_job(client, database, owner)
    await log(database, job["id"], *STEPS)
    other = await make_tenant(database, "other")

    response = await get_metrics(client, other, job["id"])
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "fine_tuning_job_id"
    assert job["id"] in error["message"]
    assert set(response.json()) == {"error"}

    missing = await get_metrics(client, owner, "ftjob-nope")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


async def test_a_negative_after_step_is_refused(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)

    for bad in (-1, "two"):
        response = await get_metrics(client, tenant, job["id"], after_step=bad)
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"}
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "after_step"
        assert set(error) == {"message", "type", "param", "code"}
