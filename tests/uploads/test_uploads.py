"""/v1/uploads: parts in any order and in parallel, joined in the order given, checked (bytes,
MD5, training data) without losing the parts on a refusal; cancel, expiry, other projects."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import update
from sqlmodel import col

from service.janitor import sweep
from service.uploads.models import Upload
from tests.factories import assert_envelope, chat_file, make_tenant

UPLOADS = "/v1/uploads"


async def start(client, tenant, content: bytes, **extra) -> dict:
    response = await client.post(
        UPLOADS,
        headers=tenant.headers,
        json={
            "bytes": len(content),
            "filename": "train.jsonl",
            "mime_type": "text/jsonl",
            "purpose": "fine-tune",
            **extra,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


async def add_part(client, tenant, upload_id: str, data: bytes):
    return await client.post(
        f"{UPLOADS}/{upload_id}/parts",
        headers=tenant.headers,
        files={"data": ("blob", data, "application/octet-stream")},
    )


async def send_parts(client, tenant, upload_id: str, content: bytes, n: int) -> list[str]:
    """Send `content` in n parts, in parallel, last part first; return the ids in file order."""
    size = -(-len(content) // n)
    chunks = [content[i : i + size] for i in range(0, len(content), size)]
    responses = await asyncio.gather(
        *(add_part(client, tenant, upload_id, chunk) for chunk in reversed(chunks))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json()["id"] for r in reversed(responses)]


async def test_parts_in_parallel_become_one_checked_file(client, database, settings):
    tenant = await make_tenant(database)
    content = chat_file(40)
    upload = await start(client, tenant, content)
    assert upload["object"] == "upload" and upload["status"] == "pending"
    assert upload["file"] is None and upload["expires_at"] == upload["created_at"] + 3600
    part_ids = await send_parts(client, tenant, upload["id"], content, 4)

    done = await client.post(
        f"{UPLOADS}/{upload['id']}/complete",
        headers=tenant.headers,
        json={"part_ids": part_ids, "md5": hashlib.md5(content).hexdigest()},
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed" and body["file"]["bytes"] == len(content)
    assert body["file"]["purpose"] == "fine-tune" and body["file"]["format"] == "chat"
    stored = await client.get(f"/v1/files/{body['file']['id']}/content", headers=tenant.headers)
    assert stored.content == content
    assert not (settings.files_dir / "uploads" / upload["id"]).exists()  # parts removed
    again = await client.post(
        f"{UPLOADS}/{upload['id']}/complete", headers=tenant.headers, json={"part_ids": part_ids}
    )
    assert assert_envelope(again, 400)["code"] == "invalid_upload_status"


async def test_a_refused_completion_keeps_the_parts_for_another_try(client, database):
    tenant = await make_tenant(database)
    content = chat_file(20)
    upload = await start(client, tenant, content)
    part_ids = await send_parts(client, tenant, upload["id"], content, 3)
    url = f"{UPLOADS}/{upload['id']}/complete"

    missing = await client.post(url, headers=tenant.headers, json={"part_ids": part_ids[:2]})
    assert assert_envelope(missing, 400)["code"] == "upload_size_mismatch"
    wrong_md5 = await client.post(
        url, headers=tenant.headers, json={"part_ids": part_ids, "md5": "0" * 32}
    )
    assert assert_envelope(wrong_md5, 400)["code"] == "md5_mismatch"
    shuffled = await client.post(url, headers=tenant.headers, json={"part_ids": part_ids[::-1]})
    assert assert_envelope(shuffled, 400)["message"]  # lines cut in the middle: not JSON Lines
    stranger = await client.post(url, headers=tenant.headers, json={"part_ids": ["part_nope"]})
    assert assert_envelope(stranger, 400)["param"] == "part_ids"
    files = (await client.get("/v1/files", headers=tenant.headers)).json()["data"]
    assert files == []  # nothing half-made

    done = await client.post(url, headers=tenant.headers, json={"part_ids": part_ids})
    assert done.status_code == 200 and done.json()["status"] == "completed"


async def test_cancel_and_what_a_cancelled_upload_refuses(client, database, settings):
    tenant = await make_tenant(database)
    upload = await start(client, tenant, b"x" * 10)
    await send_parts(client, tenant, upload["id"], b"x" * 10, 2)
    overflow = await add_part(client, tenant, upload["id"], b"x")  # past the declared 10 bytes
    assert assert_envelope(overflow, 400)["code"] == "upload_size_exceeded"
    cancelled = await client.post(f"{UPLOADS}/{upload['id']}/cancel", headers=tenant.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert not (settings.files_dir / "uploads" / upload["id"]).exists()
    late = await add_part(client, tenant, upload["id"], b"x")
    assert assert_envelope(late, 400)["code"] == "invalid_upload_status"


async def test_expired_uploads_refuse_parts_and_are_swept(client, database, settings):
    tenant = await make_tenant(database)
    upload = await start(client, tenant, b"y" * 10)
    await send_parts(client, tenant, upload["id"], b"y" * 5, 1)
    async with database.session() as session:
        await session.exec(
            update(Upload).where(col(Upload.id) == upload["id"]).values(expires_at=1)
        )
        await session.commit()
    late = await add_part(client, tenant, upload["id"], b"y")
    assert assert_envelope(late, 400)["code"] == "upload_expired"
    await sweep(database=database, files_dir=settings.files_dir, idempotency_ttl=60)
    assert not (settings.files_dir / "uploads" / upload["id"]).exists()
    cancel = await client.post(f"{UPLOADS}/{upload['id']}/cancel", headers=tenant.headers)
    assert "expired" in assert_envelope(cancel, 400)["message"]


async def test_bad_requests_and_other_projects(client, database):
    tenant, other = await make_tenant(database), await make_tenant(database, "other")
    too_big = await client.post(
        UPLOADS,
        headers=tenant.headers,
        json={
            "bytes": 9 * 1024**3,
            "filename": "a",
            "mime_type": "text/jsonl",
            "purpose": "fine-tune",
        },
    )
    assert assert_envelope(too_big, 400)["param"] == "bytes"
    purpose = await client.post(
        UPLOADS,
        headers=tenant.headers,
        json={"bytes": 1, "filename": "a", "mime_type": "text/jsonl", "purpose": "nope"},
    )
    assert assert_envelope(purpose, 400)["param"] == "purpose"
    upload = await start(client, tenant, b"z")
    for response in (
        await add_part(client, other, upload["id"], b"z"),
        await client.post(f"{UPLOADS}/{upload['id']}/cancel", headers=other.headers),
        await client.post(
            f"{UPLOADS}/{upload['id']}/complete", headers=other.headers, json={"part_ids": ["x"]}
        ),
    ):
        assert_envelope(response, 404)
    wrong_field = await client.post(
        f"{UPLOADS}/{upload['id']}/parts",
        headers=tenant.headers,
        files={"file": ("blob", b"z", "application/octet-stream")},
    )
    assert assert_envelope(wrong_field, 400)["param"] == "file"
