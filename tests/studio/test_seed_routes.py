"""The seed's Flask routes: `/api/fine-tuning/jobs` with the seed's answers and errors."""

from __future__ import annotations

import pytest

from tests.factories import make_tenant

SEED = "/api/fine-tuning/jobs"


def examples(n: int) -> list[dict]:
    return [
        {"prompt": f"Écrire un email de suivi n°{i}", "completion": f"Bonjour,\n\nSuivi {i}.\n\nJ."}
        for i in range(n)
    ]


async def test_create_then_retrieve_in_the_seeds_shapes(client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        SEED,
        headers=tenant.headers,
        json={"training_data": examples(12), "model": "gpt-4o-mini", "suffix": "company-emails"},
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert set(created) == {"success", "job_id", "status", "training_file"}
    assert created["success"] is True and created["status"] == "queued"

    lines = (
        await client.get(f"/v1/files/{created['training_file']}/content", headers=tenant.headers)
    ).text.splitlines()
    assert len(lines) == 12 and '"role": "assistant"' in lines[0]

    found = await client.get(f"{SEED}/{created['job_id']}", headers=tenant.headers)
    assert found.status_code == 200
    body = found.json()
    assert set(body) == {"success", "job"} and body["success"] is True
    assert set(body["job"]) == {
        "id",
        "status",
        "model",
        "fine_tuned_model",
        "created_at",
        "finished_at",
        "trained_tokens",
    }
    assert body["job"]["id"] == created["job_id"] and body["job"]["model"].startswith("gpt-4o-mini")
    job = (
        await client.get(f"/v1/fine_tuning/jobs/{created['job_id']}", headers=tenant.headers)
    ).json()
    assert job["user_provided_suffix"] == "company-emails"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"training_data": examples(9)}, 400, "Minimum 10 training examples"),
        ({"training_data": examples(10), "model": "no-such-model"}, 400, "no-such-model"),
        ({"training_data": [{"text": "x"}] * 10}, 400, "Invalid file"),
        ({"training_data": "not a list"}, 400, "training_data"),
        ({}, 400, "training_data"),
    ],
)
async def test_bad_requests_get_the_seeds_error_and_leave_nothing(
    client, database, body, status, words
):
    tenant = await make_tenant(database)
    response = await client.post(SEED, headers=tenant.headers, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"success", "error"} and error["success"] is False
    assert words in error["error"] and "Traceback" not in error["error"]
    assert (await client.get("/v1/files", headers=tenant.headers)).json()["data"] == []
    assert (await client.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()["data"] == []


async def test_unknown_foreign_and_unauthenticated_jobs(client, database):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    created = (
        await client.post(SEED, headers=tenant.headers, json={"training_data": examples(10)})
    ).json()
    for headers, job_id in ((other.headers, created["job_id"]), (tenant.headers, "ftjob-x")):
        response = await client.get(f"{SEED}/{job_id}", headers=headers)
        assert response.status_code == 404
        error = response.json()
        assert set(error) == {"success", "error"} and error["success"] is False
        assert job_id in error["error"]
    unauthenticated = await client.get(f"{SEED}/{created['job_id']}")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["success"] is False
    malformed = await client.post(
        SEED, headers={**tenant.headers, "content-type": "application/json"}, content=b"{not json"
    )
    assert malformed.status_code == 400 and malformed.json()["success"] is False
