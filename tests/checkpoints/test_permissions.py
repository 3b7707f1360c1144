"""Checkpoint permissions: an admin shares a model or checkpoint with another project."""

from __future__ import annotations

import asyncio

from tests.factories import make_file, make_job, make_tenant
from tests.fake_engine import run_to_success


def url(name: str, permission_id: str | None = None) -> str:
    base = f"/v1/fine_tuning/checkpoints/{name}/permissions"
    return f"{base}/{permission_id}" if permission_id else base


async def setup_shared(client, database):
    owner = await make_tenant(database, "owner", admin=True)
    guest = await make_tenant(database, "guest")
    await make_job(client, owner)
    model, checkpoints = await run_to_success(database)
    return owner, guest, model, checkpoints


async def test_grant_lets_another_project_use_the_checkpoint(client, database):
    owner, guest, _, checkpoints = await setup_shared(client, database)
    name = checkpoints[-1]
    assert (await client.get(f"/v1/models/{name}", headers=guest.headers)).status_code == 404

    created = await client.post(url(name), headers=owner.headers,
                                json={"project_ids": [guest.project_id]})
    assert created.status_code == 200, created.text
    grant = created.json()["data"][0]
    assert grant["object"] == "checkpoint.permission" and grant["id"].startswith("cp_")
    assert grant["project_id"] == guest.project_id

    assert (await client.get(f"/v1/models/{name}", headers=guest.headers)).status_code == 200
    models = (await client.get("/v1/models", headers=guest.headers)).json()["data"]
    listed = [m["id"] for m in models]
    assert name in listed
    # The guest may train from it, but not delete it.
    file_id = await make_file(client, guest)
    job = await client.post("/v1/fine_tuning/jobs", headers=guest.headers,
                            json={"model": name, "training_file": file_id})
    assert job.status_code == 200, job.text
    assert (await client.delete(f"/v1/models/{name}", headers=guest.headers)).status_code == 403

    # Granting again keeps the same permission.
    repeat = await client.post(url(name), headers=owner.headers,
                               json={"project_ids": [guest.project_id]})
    assert repeat.json()["data"][0]["id"] == grant["id"]

    page = (await client.get(url(name), headers=owner.headers)).json()
    assert [p["id"] for p in page["data"]] == [grant["id"]]
    assert page["first_id"] == page["last_id"] == grant["id"] and page["has_more"] is False
    filtered = await client.get(url(name), headers=owner.headers,
                                params={"project_id": "proj_nobody"})
    assert filtered.json()["data"] == []

    deleted = await client.delete(url(name, grant["id"]), headers=owner.headers)
    assert deleted.json() == {"id": grant["id"], "object": "checkpoint.permission",
                              "deleted": True}
    assert (await client.get(f"/v1/models/{name}", headers=guest.headers)).status_code == 404
    gone = await client.delete(url(name, grant["id"]), headers=owner.headers)
    assert gone.status_code == 404


async def test_permissions_need_an_admin_key_and_real_projects(client, database):
    owner, guest, model, _ = await setup_shared(client, database)
    member = await make_tenant(database, "owner")  # a non-admin key of the owner's project
    refused = await client.post(url(model), headers=member.headers,
                                json={"project_ids": [guest.project_id]})
    assert refused.status_code == 403
    unknown = await client.post(url(model), headers=owner.headers,
                                json={"project_ids": ["proj_doesnotexist"]})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "project_ids"
    own = await client.post(url(model), headers=owner.headers,
                            json={"project_ids": [owner.project_id]})
    assert own.status_code == 400
    empty = await client.post(url(model), headers=owner.headers, json={"project_ids": []})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "project_ids"


async def test_permission_pages_in_both_orders(client, database):
    owner, _, model, _ = await setup_shared(client, database)
    guests = [await make_tenant(database, f"guest-{i}") for i in range(3)]
    await client.post(url(model), headers=owner.headers,
                      json={"project_ids": [g.project_id for g in guests]})
    ascending = (await client.get(url(model), headers=owner.headers,
                                  params={"order": "ascending", "limit": 2})).json()
    assert [p["project_id"] for p in ascending["data"]] == [g.project_id for g in guests[:2]]
    assert ascending["has_more"] is True
    rest = (await client.get(url(model), headers=owner.headers,
                             params={"order": "ascending", "after": ascending["last_id"]})).json()
    assert [p["project_id"] for p in rest["data"]] == [guests[2].project_id]
    descending = (await client.get(url(model), headers=owner.headers)).json()
    assert [p["project_id"] for p in descending["data"]] == [g.project_id for g in guests[::-1]]


async def test_concurrent_identical_grants_all_succeed_with_one_permission(client, database):
    owner, guest, model, _ = await setup_shared(client, database)
    responses = await asyncio.gather(*(
        client.post(url(model), headers=owner.headers, json={"project_ids": [guest.project_id]})
        for _ in range(8)
    ))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.json()["data"][0]["id"] for r in responses}) == 1
