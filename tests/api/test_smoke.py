"""Smoke test: upload, create a job, list it."""

from tests.factories import make_job, make_tenant


async def test_upload_and_create_job(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    assert job["status"] == "queued"
    listed = (await client.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]
