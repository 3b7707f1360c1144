"""Request guards: body size caps, NUL characters, stalled uploads, vanished content."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import create_app
from tests.factories import chat_file, make_file, make_job, make_tenant


@pytest.fixture
async def tight_client(settings, engines) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 2 KiB cap on JSON bodies and a 0.3 s idle timeout on uploads."""
    tight = settings.model_copy(update={"max_json_bytes": 2048, "upload_idle_timeout_seconds": 0.3})
    app = create_app(tight, engines=engines)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def test_oversized_json_body_is_refused_before_authentication(tight_client):
    body = {"model": "gpt-4o-mini", "training_file": "file-x", "suffix": "a" * 4000}
    response = await tight_client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 413
    assert "larger than the maximum of 2048 bytes" in response.json()["error"]["message"]


async def test_oversized_chunked_json_body_is_refused(tight_client):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "suffix": "'
        for _ in range(10):
            yield b"a" * 500
        yield b'"}'

    response = await tight_client.post(
        "/v1/fine_tuning/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_stalled_upload_times_out_and_leaves_nothing(tight_client, settings):
    database = tight_client.app.state.database
    tenant = await make_tenant(database)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()

    async def stalling() -> AsyncIterator[bytes]:
        yield head + chat_file(3)
        await asyncio.sleep(2)
        yield b"never read"

    response = await tight_client.post(
        "/v1/files",
        headers={**tenant.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
        content=stalling(),
    )
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "upload_timeout"
    assert not any((settings.files_dir / "tmp").iterdir())


@pytest.mark.parametrize(
    "url",
    [
        "/v1/files/file-%00",
        "/v1/models/ft:%00",
        "/v1/fine_tuning/jobs?after=%00",
        "/v1/fine_tuning/jobs?metadata[k]=%00",
    ],
)
async def test_nul_in_the_url_is_400(client, database, url):
    tenant = await make_tenant(database)
    response = await client.get(url, headers=tenant.headers)
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]


async def test_nul_in_a_json_body_is_400(client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": "gpt-4o-mini", "training_file": "file-\u0000"},
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]
    project = await client.post(
        "/v1/organization/projects",
        headers=(await make_tenant(database, "ops", admin=True)).headers,
        json={"name": "bad\u0000name"},
    )
    assert project.status_code == 400


async def test_nul_in_an_upload_filename_is_dropped(client, database):
    tenant = await make_tenant(database)
    body = (
        b'--xx\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.jsonl"\r\n'
        b"\r\n{}\n\r\n--xx--\r\n"
    )
    response = await client.post(
        "/v1/files",
        headers={**tenant.headers, "content-type": "multipart/form-data; boundary=xx"},
        content=body,
    )
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "ab.jsonl"


async def test_download_of_vanished_content_is_404(client, database, settings):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    (settings.files_dir / file_id).unlink()
    response = await client.get(f"/v1/files/{file_id}/content", headers=tenant.headers)
    assert response.status_code == 404


async def test_metadata_keys_with_quotes_are_refused(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    created = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": "gpt-4o-mini", "training_file": file_id, "metadata": {'a"b': "x"}},
    )
    assert created.status_code == 400 and created.json()["error"]["param"].startswith("metadata")
    await make_job(client, tenant, training_file=file_id, metadata={"team": "x"})
    listed = await client.get(
        "/v1/fine_tuning/jobs", headers=tenant.headers, params={'metadata[a"b]': "x"}
    )
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "metadata"
