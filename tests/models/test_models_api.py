"""Models over HTTP: base models, fine-tuned models, shared checkpoints, deletion."""

from __future__ import annotations

from tests.factories import make_job, make_tenant
from tests.fake_engine import SHUTDOWN, run_to_success


async def test_list_shows_serving_bases_and_own_fine_tuned_models(client, database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    model, _ = await run_to_success(database)
    listed = (await client.get("/v1/models", headers=tenant.headers)).json()
    assert listed["object"] == "list"
    ids = [m["id"] for m in listed["data"]]
    assert "gpt-4o-mini-2024-07-18" in ids and model in ids
    base = next(m for m in listed["data"] if m["id"] == "gpt-4o-mini-2024-07-18")
    assert base == {"id": "gpt-4o-mini-2024-07-18", "object": "model", "created": base["created"],
                    "owned_by": "system", "shutdown_date": SHUTDOWN.isoformat(),
                    "training_cutoff": None, "warning": None}
    mine = next(m for m in listed["data"] if m["id"] == model)
    assert mine["owned_by"] == "org-personal" and mine["shutdown_date"] == SHUTDOWN.isoformat()


async def test_retrieve_by_name_with_colons(client, database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    model, checkpoints = await run_to_success(database)
    for name in (model, checkpoints[-1], "gpt-4.1-2025-04-14"):
        response = await client.get(f"/v1/models/{name}", headers=tenant.headers)
        assert response.status_code == 200, name
        assert response.json()["id"] == name
    missing = await client.get("/v1/models/ft:gpt-4o-mini:personal::nope", headers=tenant.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_delete_own_fine_tuned_model_only(client, database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    model, checkpoints = await run_to_success(database)
    base = await client.delete("/v1/models/gpt-4o-mini-2024-07-18", headers=tenant.headers)
    assert base.status_code == 403 and base.json()["error"]["type"] == "permission_error"
    checkpoint = await client.delete(f"/v1/models/{checkpoints[0]}", headers=tenant.headers)
    assert checkpoint.status_code == 403
    deleted = await client.delete(f"/v1/models/{model}", headers=tenant.headers)
    assert deleted.json() == {"id": model, "object": "model", "deleted": True}
    assert (await client.get(f"/v1/models/{model}", headers=tenant.headers)).status_code == 404
    again = await client.delete(f"/v1/models/{model}", headers=tenant.headers)
    assert again.status_code == 404


async def test_continue_training_from_a_fine_tuned_model_or_checkpoint(client, database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    model, checkpoints = await run_to_success(database)
    for start in (model, checkpoints[-1]):
        job = await make_job(client, tenant, model=start)
        assert job["model"] == start
    other = await make_tenant(database, "other")
    refused = await client.post(
        "/v1/fine_tuning/jobs", headers=other.headers,
        json={"model": model, "training_file": "file-x"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"


async def test_an_alias_answers_as_itself(client, database):
    tenant = await make_tenant(database)
    response = await client.get("/v1/models/gpt-4o-mini", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["id"] == "gpt-4o-mini"
    assert response.json()["shutdown_date"] == SHUTDOWN.isoformat()
