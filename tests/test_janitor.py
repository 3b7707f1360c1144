"""The janitor removes expired files, old idempotency records and abandoned upload leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col, select

from service.db import Database
from service.files.models import File
from service.idempotency import IdempotencyRecord
from service.janitor import sweep
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
    a_minute_ago = time.time() - 60
    os.utime(stale, (a_minute_ago, a_minute_ago))

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


HOLDER = """
import sys, time
from pathlib import Path
from service.files.scratch import HeldFile
held = HeldFile(Path(sys.argv[1]), "upload")
with held.open() as out:
    out.write(b"part of an upload")
print(held.path, flush=True)
time.sleep(600)
"""


def hold_in_another_process(directory: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start a process that receives an upload into `directory` and never finishes it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    path = Path(process.stdout.readline().strip())
    a_minute_ago = time.time() - 60
    os.utime(path, (a_minute_ago, a_minute_ago))
    return process, path


async def test_an_upload_of_a_live_process_is_kept_and_a_dead_ones_removed(database_url, settings):
    # A database without the app: the app's own janitor would sweep the same folder meanwhile
    # (its first pass runs at start-up), and could remove the leftover before this test's sweep.
    database = Database(database_url)
    tmp = settings.files_dir / "tmp"
    process, path = hold_in_another_process(tmp)
    try:
        kept = await sweep(database=database, files_dir=settings.files_dir, idempotency_ttl=60)
        assert kept.upload_leftovers == 0 and path.exists()
        process.send_signal(signal.SIGKILL)  # as a crash would: nothing cleans up
        process.wait(timeout=10)
        assert path.exists()
        removed = await sweep(database=database, files_dir=settings.files_dir, idempotency_ttl=60)
        assert removed.upload_leftovers == 1 and not path.exists()
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        await database.dispose()
