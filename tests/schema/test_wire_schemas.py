"""Every answer of the routes OpenAI also has validates against OpenAI's schemas (pinned commit in
openai_schemas.json): files, uploads, jobs, events, checkpoints, permissions, models, lists
(empty ones too) and the error envelope of every error status."""

from __future__ import annotations

import hashlib

from tests.factories import chat_file, job_method, make_file, make_tenant
from tests.fake_engine import claim_next
from tests.schema.openai import check, check_error

JOBS = "/v1/fine_tuning/jobs"


def permissions_url(name: str) -> str:
    return f"/v1/fine_tuning/checkpoints/{name}/permissions"


async def test_files_and_uploads(client, database):
    tenant = await make_tenant(database)
    h = tenant.headers
    empty = check(await client.get("/v1/files", headers=h), "ListFilesResponse")
    assert empty["data"] == []

    content = chat_file()
    created = check(
        await client.post(
            "/v1/files",
            headers=h,
            data={"purpose": "fine-tune"},
            files={"file": ("train.jsonl", content, "application/jsonl")},
        ),
        "OpenAIFile",
    )
    assert "expires_at" not in created and "status_details" not in created
    expiring = check(
        await client.post(
            "/v1/files",
            headers=h,
            data={
                "purpose": "batch",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "3600",
            },
            files={"file": ("batch.jsonl", b'{"a": 1}\n', "application/jsonl")},
        ),
        "OpenAIFile",
    )
    assert expiring["expires_at"] == expiring["created_at"] + 3600
    check(await client.get(f"/v1/files/{created['id']}", headers=h), "OpenAIFile")
    page = check(await client.get("/v1/files", headers=h, params={"limit": 1}), "ListFilesResponse")
    assert page["has_more"] is True
    download = await client.get(f"/v1/files/{created['id']}/content", headers=h)
    assert download.status_code == 200 and download.content == content
    check(await client.delete(f"/v1/files/{expiring['id']}", headers=h), "DeleteFileResponse")
    check_error(await client.get(f"/v1/files/{expiring['id']}", headers=h), 404)

    upload = check(
        await client.post(
            "/v1/uploads",
            headers=h,
            json={
                "bytes": len(content),
                "filename": "big.jsonl",
                "mime_type": "text/jsonl",
                "purpose": "fine-tune",
            },
        ),
        "Upload",
    )
    part = check(
        await client.post(
            f"/v1/uploads/{upload['id']}/parts", headers=h, files={"data": ("p", content)}
        ),
        "UploadPart",
    )
    done = check(
        await client.post(
            f"/v1/uploads/{upload['id']}/complete",
            headers=h,
            json={"part_ids": [part["id"]], "md5": hashlib.md5(content).hexdigest()},
        ),
        "Upload",
    )
    assert done["file"]["bytes"] == len(content)
    other = await client.post(
        "/v1/uploads",
        headers=h,
        json={"bytes": 10, "filename": "x.jsonl", "mime_type": "text/jsonl", "purpose": "batch"},
    )
    check(await client.post(f"/v1/uploads/{other.json()['id']}/cancel", headers=h), "Upload")


async def test_jobs_events_checkpoints_models_and_permissions(client, database):
    owner = await make_tenant(database, "owner", admin=True)
    guest = await make_tenant(database, "guest")
    h = owner.headers
    empty = check(await client.get(JOBS, headers=h), "ListPaginatedFineTuningJobsResponse")
    assert empty["data"] == [] and empty["has_more"] is False

    file_id = await make_file(client, owner)
    job = check(
        await client.post(
            JOBS,
            headers=h,
            json={
                "model": "gpt-4o-mini",
                "training_file": file_id,
                "method": job_method(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5),
                "integrations": [{"type": "wandb", "wandb": {"project": "mails"}}],
                "metadata": {"team": "support"},
            },
        ),
        "FineTuningJob",
    )
    assert "tags" not in job["integrations"][0]["wandb"]
    # Required fields stay, null while they have no value.
    assert job["fine_tuned_model"] is None and job["finished_at"] is None
    assert job["error"] is None and job["trained_tokens"] is None

    run = await claim_next(database)
    await run.start({"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5})
    empty_checkpoints = check(
        await client.get(f"{JOBS}/{job['id']}/checkpoints", headers=h),
        "ListFineTuningJobCheckpointsResponse",
    )
    assert empty_checkpoints["data"] == []
    await run.metrics(total_steps=2)
    await run.checkpoint()
    await run.metrics(total_steps=2)
    await run.checkpoint()
    model = await run.succeed()

    events = check(
        await client.get(f"{JOBS}/{job['id']}/events", headers=h),
        "ListFineTuningJobEventsResponse",
    )
    assert all(isinstance(e["data"], dict) for e in events["data"])
    check(await client.get("/v1/fine_tuning/events", headers=h), "ListFineTuningJobEventsResponse")
    checkpoints = check(
        await client.get(f"{JOBS}/{job['id']}/checkpoints", headers=h),
        "ListFineTuningJobCheckpointsResponse",
    )
    check(await client.get(f"{JOBS}/{job['id']}", headers=h), "FineTuningJob")
    check(await client.get(JOBS, headers=h), "ListPaginatedFineTuningJobsResponse")

    # A failed job carries its error; a cancelled one does not.
    failed = await client.post(
        JOBS, headers=h, json={"model": "gpt-4o-mini", "training_file": file_id}
    )
    run = await claim_next(database)
    await run.start()
    await run.fail(code="invalid_training_file", message="bad")
    failed = check(await client.get(f"{JOBS}/{failed.json()['id']}", headers=h), "FineTuningJob")
    assert failed["error"]["code"] == "invalid_training_file"
    queued = await client.post(
        JOBS, headers=h, json={"model": "gpt-4o-mini", "training_file": file_id}
    )
    queued_url = f"{JOBS}/{queued.json()['id']}"
    paused = check(await client.post(f"{queued_url}/pause", headers=h), "FineTuningJob")
    assert paused["status"] == "paused"
    check(await client.post(f"{queued_url}/resume", headers=h), "FineTuningJob")
    check_error(await client.post(f"{queued_url}/resume", headers=h), 400)
    check(await client.post(f"{queued_url}/cancel", headers=h), "FineTuningJob")

    name = checkpoints["data"][0]["fine_tuned_model_checkpoint"]
    no_grants = check(
        await client.get(permissions_url(name), headers=h),
        "ListFineTuningCheckpointPermissionResponse",
    )
    assert no_grants["data"] == []
    granted = check(
        await client.post(
            permissions_url(name), headers=h, json={"project_ids": [guest.project_id]}
        ),
        "ListFineTuningCheckpointPermissionResponse",
    )
    check(
        await client.get(permissions_url(name), headers=h),
        "ListFineTuningCheckpointPermissionResponse",
    )
    check(
        await client.delete(f"{permissions_url(name)}/{granted['data'][0]['id']}", headers=h),
        "DeleteFineTuningCheckpointPermissionResponse",
    )
    check_error(
        await client.post(
            permissions_url(name), headers=guest.headers, json={"project_ids": [owner.project_id]}
        ),
        403,
    )

    models = check(await client.get("/v1/models", headers=h), "ListModelsResponse")
    assert model in [m["id"] for m in models["data"]]
    check(await client.get("/v1/models/gpt-4o-mini", headers=h), "Model")
    check(await client.get(f"/v1/models/{model}", headers=h), "Model")
    check(await client.delete(f"/v1/models/{model}", headers=h), "DeleteModelResponse")


async def test_error_answers(client, database):
    tenant = await make_tenant(database)
    h = tenant.headers
    check_error(await client.get(JOBS), 401)
    check_error(await client.get(JOBS, headers={"Authorization": "Bearer sk-nobody"}), 401)
    check_error(await client.get(f"{JOBS}/ftjob-nobody", headers=h), 404)
    check_error(await client.get("/v1/nowhere", headers=h), 404)
    check_error(await client.put(JOBS, headers=h), 405)
    check_error(await client.post(JOBS, headers=h, json={"model": "gpt-4o-mini"}), 400)
    check_error(
        await client.post(
            JOBS, headers={**h, "Content-Type": "application/json"}, content=b"{not json"
        ),
        400,
    )
    check_error(await client.post(JOBS, headers=h, json={"model": "x" * 2_000_000}), 413)
    check_error(await client.get(JOBS, headers=h, params={"after": "ftjob-nobody"}), 400)
    reused = {**h, "Idempotency-Key": "one"}
    await client.post("/v1/uploads", headers=reused, json={})
    check_error(await client.post("/v1/uploads", headers=reused, json={"bytes": 1}), 409)
