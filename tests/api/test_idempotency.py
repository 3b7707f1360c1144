"""`Idempotency-Key` on POST: a repeat replays the first answer, other parameters get 409."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlmodel import select, update

from service.app import create_app
from service.idempotency import IN_PROGRESS_LEASE_SECONDS, IdempotencyRecord
from service.jobs import service as jobs_service
from service.projects.service import authenticate_key
from service.settings import Settings
from tests.factories import Tenant, assert_envelope, chat_file, make_file, make_tenant, upload
from tests.fake_engine import fake_engines

JOBS = "/v1/fine_tuning/jobs"


def with_key(tenant: Tenant, key: str) -> dict[str, str]:
    return {**tenant.headers, "Idempotency-Key": key}


async def create_job(
    client: httpx.AsyncClient, tenant: Tenant, key: str, **body: Any
) -> httpx.Response:
    return await client.post(JOBS, headers=with_key(tenant, key), json=body)


async def job_ids(client: httpx.AsyncClient, tenant: Tenant) -> list[str]:
    listed = await client.get(JOBS, headers=tenant.headers)
    assert listed.status_code == 200
    return [job["id"] for job in listed.json()["data"]]


async def file_ids(client: httpx.AsyncClient, tenant: Tenant) -> list[str]:
    listed = await client.get("/v1/files", headers=tenant.headers)
    assert listed.status_code == 200
    return [f["id"] for f in listed.json()["data"]]


async def upload_with_boundary(
    client: httpx.AsyncClient, tenant: Tenant, key: str, content: bytes, boundary: str
) -> httpx.Response:
    """POST /v1/files as a client that picked `boundary` for this attempt."""
    return await client.post(
        "/v1/files",
        headers={
            **with_key(tenant, key),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", content, "application/jsonl")},
    )


@pytest.fixture
async def tenant(database) -> Tenant:
    return await make_tenant(database)


@pytest.fixture
async def training_file(client, tenant) -> str:
    return await make_file(client, tenant)


# ---------------------------------------------------------------- jobs


async def test_repeat_replays_the_same_job(client, tenant, training_file):
    body = {"model": "gpt-4o-mini", "training_file": training_file, "suffix": "mail"}
    first = await create_job(client, tenant, "job-1", **body)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers

    again = await create_job(client, tenant, "job-1", **body)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["x-request-id"].startswith("req_")

    assert await job_ids(client, tenant) == [first.json()["id"]]


async def test_many_repeats_create_one_job(client, tenant, training_file):
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    answers = [await create_job(client, tenant, "same", **body) for _ in range(4)]
    assert {a.json()["id"] for a in answers} == {answers[0].json()["id"]}
    assert [a.headers.get("idempotent-replayed") for a in answers] == [None, "true", "true", "true"]
    assert len(await job_ids(client, tenant)) == 1


async def test_without_a_key_every_request_creates_a_job(client, tenant, training_file):
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    first = await client.post(JOBS, headers=tenant.headers, json=body)
    second = await client.post(JOBS, headers=tenant.headers, json=body)
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers


async def test_different_keys_are_different_requests(client, tenant, training_file):
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    first = await create_job(client, tenant, "key-a", **body)
    second = await create_job(client, tenant, "key-b", **body)
    assert first.json()["id"] != second.json()["id"]
    assert len(await job_ids(client, tenant)) == 2


@pytest.mark.parametrize(
    "change",
    [{"suffix": "other"}, {"seed": 7}, {"model": "gpt-4o"}],
    ids=["suffix", "seed", "model"],
)
async def test_same_key_with_other_parameters_is_409(client, tenant, training_file, change):
    body = {"model": "gpt-4o-mini", "training_file": training_file, "suffix": "mail"}
    first = await create_job(client, tenant, "job-1", **body)
    assert first.status_code == 200, first.text

    conflict = await create_job(client, tenant, "job-1", **{**body, **change})
    error = assert_envelope(conflict, 409)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "Idempotency-Key"
    assert error["code"] == "idempotency_key_reused"
    assert conflict.headers["x-request-id"].startswith("req_")
    assert await job_ids(client, tenant) == [first.json()["id"]]

    # The conflict is not stored: the original request still replays.
    again = await create_job(client, tenant, "job-1", **body)
    assert again.json()["id"] == first.json()["id"]


async def test_same_key_on_another_route_is_409(client, tenant, training_file):
    job = await create_job(
        client, tenant, "shared", model="gpt-4o-mini", training_file=training_file
    )
    assert job.status_code == 200
    cancel = await client.post(
        f"{JOBS}/{job.json()['id']}/cancel", headers=with_key(tenant, "shared")
    )
    assert assert_envelope(cancel, 409)["code"] == "idempotency_key_reused"
    assert (await client.get(f"{JOBS}/{job.json()['id']}", headers=tenant.headers)).json()[
        "status"
    ] == "queued"


async def test_same_key_in_another_project_is_independent(client, database, tenant, training_file):
    other = await make_tenant(database, "globex")
    other_file = await make_file(client, other)

    mine = await create_job(
        client, tenant, "job-1", model="gpt-4o-mini", training_file=training_file
    )
    theirs = await create_job(client, other, "job-1", model="gpt-4o-mini", training_file=other_file)
    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert await job_ids(client, tenant) == [mine.json()["id"]]
    assert await job_ids(client, other) == [theirs.json()["id"]]


async def test_identical_request_in_another_project_is_not_a_replay(client, database, tenant):
    """Same key, same bytes, another project: its own answer (here, its own 400)."""
    other = await make_tenant(database, "globex")
    body = {"model": "gpt-4o-mini", "training_file": "file-" + "0" * 24}
    mine = await create_job(client, tenant, "k", **body)
    theirs = await create_job(client, other, "k", **body)
    assert mine.status_code == theirs.status_code == 400
    assert "idempotent-replayed" not in theirs.headers


async def test_a_4xx_answer_is_replayed(client, tenant, training_file):
    body = {"model": "gpt-2-tiny", "training_file": training_file}
    first = await create_job(client, tenant, "bad-model", **body)
    error = assert_envelope(first, 400)
    assert error["param"] == "model"

    again = await create_job(client, tenant, "bad-model", **body)
    assert again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await job_ids(client, tenant) == []


async def test_a_validation_error_is_replayed(client, tenant):
    first = await create_job(client, tenant, "no-file", model="gpt-4o-mini")
    assert assert_envelope(first, 400)["param"] == "training_file"
    again = await create_job(client, tenant, "no-file", model="gpt-4o-mini")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


@pytest.mark.parametrize("key", ["", "k" * 256], ids=["empty", "too-long"])
async def test_bad_key_is_400(client, tenant, training_file, key):
    response = await create_job(
        client, tenant, key, model="gpt-4o-mini", training_file=training_file
    )
    error = assert_envelope(response, 400)
    assert error["param"] == "Idempotency-Key"
    assert response.headers["x-request-id"].startswith("req_")
    assert await job_ids(client, tenant) == []


async def test_longest_key_is_accepted(client, tenant, training_file):
    key = "k" * 255
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    first = await create_job(client, tenant, key, **body)
    assert first.status_code == 200, first.text
    again = await create_job(client, tenant, key, **body)
    assert again.headers["idempotent-replayed"] == "true"


async def test_unknown_api_key_with_idempotency_key_is_401(client, training_file):
    stranger = Tenant(project_id="proj_x", key="sk-ft-unknown-000000000000000000000")
    response = await create_job(
        client, stranger, "k", model="gpt-4o-mini", training_file=training_file
    )
    assert assert_envelope(response, 401)["type"] == "authentication_error"


async def test_key_is_ignored_on_get(client, tenant, training_file):
    headers = with_key(tenant, "get")
    first = await client.get(JOBS, headers=headers)
    await client.post(
        JOBS, headers=tenant.headers, json={"model": "gpt-4o-mini", "training_file": training_file}
    )
    second = await client.get(JOBS, headers=headers)
    assert "idempotent-replayed" not in second.headers
    assert len(second.json()["data"]) == len(first.json()["data"]) + 1


# ---------------------------------------------------------------- uploads


async def test_upload_repeat_with_another_boundary_is_a_replay(client, tenant):
    content = chat_file()
    first = await upload_with_boundary(client, tenant, "up-1", content, "a1b2c3d4e5")
    assert first.status_code == 200, first.text

    again = await upload_with_boundary(
        client, tenant, "up-1", content, "----------------------------Zz9876543210fedcba"
    )
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await file_ids(client, tenant) == [first.json()["id"]]


async def test_upload_repeat_with_other_content_is_409(client, tenant):
    first = await upload_with_boundary(client, tenant, "up-1", chat_file(12), "boundary-one")
    assert first.status_code == 200, first.text
    conflict = await upload_with_boundary(client, tenant, "up-1", chat_file(13), "boundary-two")
    assert assert_envelope(conflict, 409)["code"] == "idempotency_key_reused"
    assert await file_ids(client, tenant) == [first.json()["id"]]


async def test_refused_upload_is_replayed(client, tenant):
    bad = b"not json\n" * 12
    first = await upload_with_boundary(client, tenant, "up-bad", bad, "boundary-one")
    assert assert_envelope(first, 400)["code"] == "invalid_json"
    again = await upload_with_boundary(client, tenant, "up-bad", bad, "boundary-two")
    assert again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await file_ids(client, tenant) == []


def multipart_body(boundary: str, content: bytes) -> bytes:
    """A multipart body as the SDK lays it out: purpose first, then the file."""
    b = boundary.encode()
    return (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        + b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
        + b"Content-Type: application/jsonl\r\n\r\n"
        + content
        + b"\r\n"
        + b"--"
        + b
        + b"--\r\n"
    )


async def in_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_replay_does_not_depend_on_how_the_body_is_chunked(client, tenant):
    """Boundaries split across network chunks are still left out of the request hash."""
    content = chat_file()
    first = await client.post(
        "/v1/files",
        headers={**with_key(tenant, "chunks"), "Content-Type": "multipart/form-data; boundary=AaB"},
        content=multipart_body("AaB", content),
    )
    assert first.status_code == 200, first.text
    boundary = "x" * 40 + "Chunky"
    again = await client.post(
        "/v1/files",
        headers={
            **with_key(tenant, "chunks"),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        content=in_chunks(multipart_body(boundary, content), 7),
    )
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await file_ids(client, tenant) == [first.json()["id"]]


# ---------------------------------------------------------------- in progress, expiry, 5xx


async def test_repeat_while_the_first_is_in_progress_is_409(
    client, database, tenant, training_file
):
    await reserve(database, tenant, "busy", started=time.time())
    response = await create_job(
        client, tenant, "busy", model="gpt-4o-mini", training_file=training_file
    )
    error = assert_envelope(response, 409)
    assert error["code"] == "idempotency_request_in_progress"
    assert error["param"] == "Idempotency-Key"
    assert await job_ids(client, tenant) == []


async def test_a_reservation_left_by_a_crash_is_taken_over(client, database, tenant, training_file):
    started = time.time() - IN_PROGRESS_LEASE_SECONDS - 1
    await reserve(database, tenant, "crashed", started=started)
    response = await create_job(
        client, tenant, "crashed", model="gpt-4o-mini", training_file=training_file
    )
    assert response.status_code == 200, response.text
    assert await job_ids(client, tenant) == [response.json()["id"]]


async def reserve(database, tenant, key: str, *, started: float) -> None:
    """Write what the middleware records when it starts processing a request."""
    async with database.session() as session:
        api_key, _ = await authenticate_key(session=session, value=tenant.key)
        session.add(IdempotencyRecord(api_key_id=api_key.id, key=key, created_at=started))
        await session.commit()


async def test_replays_are_scoped_to_the_api_key(client, database, tenant, training_file):
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    first = await create_job(client, tenant, "shared-key", **body)
    colleague = await make_tenant(database, "acme")  # another key of the same project
    assert colleague.project_id == tenant.project_id
    second = await create_job(client, colleague, "shared-key", **body)
    assert second.status_code == 200 and "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]


async def test_answers_holding_a_new_key_are_never_stored_or_replayed(client, database):
    admin = await make_tenant(database, "acme", admin=True)
    member = await make_tenant(database, "acme")
    url = f"/v1/organization/projects/{admin.project_id}/api_keys"
    headers = {**admin.headers, "Idempotency-Key": "k-1"}
    created = await client.post(url, headers=headers, json={"name": "ci", "admin": True})
    assert created.status_code == 200 and created.json()["value"]
    # Another key presenting the same Idempotency-Key gets no replay of the secret.
    member_headers = {**member.headers, "Idempotency-Key": "k-1"}
    stolen = await client.post(url, headers=member_headers, json={"name": "ci", "admin": True})
    assert stolen.status_code == 403
    async with database.session() as session:
        kept = (await session.exec(select(IdempotencyRecord))).all()
    assert kept == []


async def test_expired_key_runs_the_request_again(client, database, tenant, training_file):
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    first = await create_job(client, tenant, "old", **body)
    async with database.session() as session:
        await session.exec(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "old")
            .values(created_at=time.time() - 2 * 24 * 3600)
        )
        await session.commit()
    again = await create_job(client, tenant, "old", **body)
    assert again.status_code == 200, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    replay = await create_job(client, tenant, "old", **body)
    assert replay.json()["id"] == again.json()["id"]


async def test_a_5xx_answer_is_not_kept(client, tenant, training_file, monkeypatch):
    body = {"model": "gpt-4o-mini", "training_file": training_file}
    real_create_job = jobs_service.create_job

    async def broken(**kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(jobs_service, "create_job", broken)
    failed = await create_job(client, tenant, "flaky", **body)
    error = assert_envelope(failed, 500)
    assert error["type"] == "server_error"
    assert "fire" not in error["message"]

    monkeypatch.setattr(jobs_service, "create_job", real_create_job)
    retried = await create_job(client, tenant, "flaky", **body)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert await job_ids(client, tenant) == [retried.json()["id"]]


# ---------------------------------------------------------------- answered before the body was read


@pytest.fixture
async def small_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app that accepts files of at most 2048 bytes."""
    small = create_app(
        settings.model_copy(update={"max_upload_bytes": 2048}), engines=fake_engines()
    )
    async with small.router.lifespan_context(small):
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.mark.parametrize(
    "content",
    [chat_file(30), chat_file(400) * 3],
    ids=["refused-while-streaming", "refused-by-content-length"],
)
async def test_identical_retry_of_a_413_upload_replays_the_413(small_client, tenant, content):
    """The upload is refused before its body is read to the end; the identical retry must
    still be recognised as the same request."""
    headers = with_key(tenant, "too-big")
    first = await small_client.post(
        "/v1/files",
        headers=headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", content, "application/jsonl")},
    )
    assert assert_envelope(first, 413)["code"] == "file_too_large"
    again = await small_client.post(
        "/v1/files",
        headers=headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", content, "application/jsonl")},
    )
    assert again.status_code == 413, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content


async def test_identical_retry_of_a_non_multipart_upload_replays_the_400(client, tenant):
    headers = with_key(tenant, "json-upload")
    first = await client.post("/v1/files", headers=headers, json={"purpose": "fine-tune"})
    assert assert_envelope(first, 400)["code"] == "invalid_content_type"
    again = await client.post("/v1/files", headers=headers, json={"purpose": "fine-tune"})
    assert again.status_code == 400, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content


async def test_413_then_other_small_upload_with_same_key_is_409(small_client, tenant):
    """Reusing the key for a different (now acceptable) upload is still a conflict."""
    headers = with_key(tenant, "too-big")
    first = await small_client.post(
        "/v1/files",
        headers=headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", chat_file(30), "application/jsonl")},
    )
    assert first.status_code == 413
    other = await upload(small_client, tenant, b"x", purpose="batch")
    assert other.status_code == 200  # without the key: a normal upload
    conflict = await small_client.post(
        "/v1/files", headers=headers, data={"purpose": "batch"}, files={"file": ("x", b"x")}
    )
    assert assert_envelope(conflict, 409)["code"] == "idempotency_key_reused"
