"""The janitor removes expired files, old idempotency records and abandoned upload leftovers."""

from __future__ import annotations

import os
import time

from sqlalchemy import update
from sqlmodel import col, select

from service.files.models import File
from service.idempotency import IdempotencyRecord
from service.janitor import STALE_UPLOAD_SECONDS, sweep
from service.projects.service import authenticate_key
from tests.factories import make_file, make_tenant


async def test_sweep_removes_only_what_has_expired(client, database, settings):
    tenant = await make_tenant(database)
    expired = await make_file(client, tenant)
    kept = await make_file(client, tenant)
    async with database.session() as session:
        await session.exec(
            update(File).where(col(File.id) == expired).values(expires_at=int(time.time()) - 1)
        )
        api_key, _ = await authenticate_key(session=session, value=tenant.key)
        old = time.time() - settings.idempotency_ttl_seconds - 1
        session.add(IdempotencyRecord(api_key_id=api_key.id, key="old", created_at=old,
                                      status_code=200, request_hash="x"))
        session.add(IdempotencyRecord(api_key_id=api_key.id, key="new", created_at=time.time(),
                                      status_code=200, request_hash="y"))
        await session.commit()
    tmp = settings.files_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    stale, fresh = tmp / "upload-stale", tmp / "upload-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    long_ago = time.time() - STALE_UPLOAD_SECONDS - 10
    os.utime(stale, (long_ago, long_ago))

    result = await sweep(database=database, files_dir=settings.files_dir,
                         idempotency_ttl=settings.idempotency_ttl_seconds)

    assert (result.files, result.idempotency_records, result.upload_leftovers) == (1, 1, 1)
    assert not (settings.files_dir / expired).exists() and (settings.files_dir / kept).exists()
    assert not stale.exists() and fresh.exists()
    async with database.session() as session:
        assert (await session.exec(select(File.id))).all() == [kept]
        keys = (await session.exec(select(IdempotencyRecord.key))).all()
    assert keys == ["new"]
    again = await sweep(database=database, files_dir=settings.files_dir,
                        idempotency_ttl=settings.idempotency_ttl_seconds)
    assert (again.files, again.idempotency_records, again.upload_leftovers) == (0, 0, 0)
