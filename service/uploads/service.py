"""Rules of multipart uploads: parts stream to disk as they arrive, in any order and from
several clients at once; completion joins them in the order given, checks the byte count (and
the MD5 when given), and stores the result through the files domain with an upload's checks.

Parts live under `<files>/uploads/<upload id>/<part id>`. The joined file is written by
`os.copy_file_range`, which file systems with reflinks (XFS, Btrfs) do without copying bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import anyio
from sqlalchemy import func
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidRequest, NotFound
from service.files.models import File
from service.files.scratch import HeldFile
from service.files.service import create_fetched_file, get_file
from service.files.upload import ReceivedUpload
from service.ids import new_id, now
from service.uploads.models import Upload, UploadPart
from service.uploads.schemas import UPLOAD_TTL_SECONDS, UploadComplete, UploadCreate

# While one request joins the parts; shown as "pending" on the wire.
COMPLETING = "completing"


def parts_dir(files_dir: Path, upload_id: str) -> Path:
    """Return the folder of an upload's parts."""
    return files_dir / "uploads" / upload_id


async def create_upload(*, session: AsyncSession, project_id: str, body: UploadCreate) -> Upload:
    """Open an upload that parts can be added to for the next hour."""
    created_at = now()
    row = Upload(
        id=new_id("upload_"),
        project_id=project_id,
        created_at=created_at,
        expires_at=created_at + UPLOAD_TTL_SECONDS,
        bytes=body.bytes,
        filename=Path(body.filename.replace("\\", "/")).name or "upload",
        purpose=body.purpose,
        mime_type=body.mime_type,
        status="pending",
        file_expires_after=body.expires_after.seconds if body.expires_after else None,
    )
    session.add(row)
    await session.commit()
    return row


async def get_upload(*, session: AsyncSession, project_id: str, upload_id: str) -> Upload:
    """Return the project's upload, or raise NotFound (also for other projects' uploads)."""
    row = (
        await session.exec(
            select(Upload).where(Upload.id == upload_id, Upload.project_id == project_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"No upload found with id '{upload_id}'.", param="upload_id")
    return row


async def upload_file(*, session: AsyncSession, row: Upload) -> File | None:
    """Return the file a completed upload became."""
    if row.file_id is None:
        return None
    return await get_file(session=session, project_id=row.project_id, file_id=row.file_id)


def _ensure_pending(row: Upload) -> None:
    if row.status == COMPLETING:
        raise InvalidRequest(
            f"Upload {row.id} is being completed by another request.", code="upload_in_progress"
        )
    if row.status == "pending" and now() >= row.expires_at:
        raise InvalidRequest(
            f"Upload {row.id} has expired; create a new one.", code="upload_expired"
        )
    if row.status != "pending":
        raise InvalidRequest(
            f"Upload {row.id} is {row.status}; parts can only be added to a pending upload.",
            code="invalid_upload_status",
        )


async def add_part(
    *, session: AsyncSession, row: Upload, received: ReceivedUpload, files_dir: Path
) -> UploadPart:
    """Keep a received part of a pending upload."""
    _ensure_pending(row)
    if received.path is None:
        raise InvalidRequest(
            "Missing required parameter: 'data'.", param="data", code="missing_required_parameter"
        )
    received_before = (
        await session.exec(
            select(func.coalesce(func.sum(UploadPart.bytes), 0)).where(
                UploadPart.upload_id == row.id
            )
        )
    ).one()
    if received_before + received.size > row.bytes:
        raise InvalidRequest(
            f"This part would bring upload {row.id} to {received_before + received.size} bytes; "
            f"it was created for {row.bytes}.",
            param="data",
            code="upload_size_exceeded",
        )
    part = UploadPart(id=new_id("part_"), upload_id=row.id, created_at=now(), bytes=received.size)
    destination = parts_dir(files_dir, row.id) / part.id
    destination.parent.mkdir(parents=True, exist_ok=True)
    await anyio.to_thread.run_sync(received.move_to, destination)
    try:
        session.add(part)
        await session.commit()
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return part


def _join(sources: Sequence[Path], held: HeldFile, md5: str | None) -> str | None:
    """Write the parts one after another into `held`; return their MD5 when asked for it."""
    digest = hashlib.md5(usedforsecurity=False) if md5 is not None else None
    with held.open() as out:
        for source in sources:
            with source.open("rb") as part:
                if digest is not None:
                    for chunk in iter(lambda: part.read(1 << 20), b""):
                        digest.update(chunk)
                    part.seek(0)
                size = os.fstat(part.fileno()).st_size
                try:
                    while size and (sent := os.copy_file_range(part.fileno(), out.fileno(), size)):
                        size -= sent
                except OSError:
                    # Not supported here: copy the rest in chunks (both positions moved on).
                    shutil.copyfileobj(part, out, 1 << 20)
    return digest.hexdigest() if digest is not None else None


async def _move(session: AsyncSession, upload_id: str, old: str, new: str) -> bool:
    """Change the upload's status from `old` to `new` unless someone did first (compare and set)."""
    result = await session.exec(
        update(Upload)
        .where(col(Upload.id) == upload_id, col(Upload.status) == old)
        .values(status=new)
    )
    await session.commit()
    return bool(result.rowcount)


async def complete_upload(
    *, session: AsyncSession, row: Upload, body: UploadComplete, files_dir: Path
) -> File:
    """Join the parts in the order given into a file (checked as an upload is) and mark the
    upload completed in the file's transaction; on a refusal the parts stay for another try."""
    _ensure_pending(row)
    if len(set(body.part_ids)) != len(body.part_ids):
        raise InvalidRequest("part_ids lists a part twice.", param="part_ids")
    parts = {
        p.id: p
        for p in (
            await session.exec(
                select(UploadPart).where(
                    UploadPart.upload_id == row.id, col(UploadPart.id).in_(body.part_ids)
                )
            )
        ).all()
    }
    unknown = [part_id for part_id in body.part_ids if part_id not in parts]
    if unknown:
        raise InvalidRequest(
            f"Part {unknown[0]} is not a part of upload {row.id}.", param="part_ids"
        )
    total = sum(parts[part_id].bytes for part_id in body.part_ids)
    if total != row.bytes:
        raise InvalidRequest(
            f"The parts hold {total} bytes, but the upload was created for {row.bytes}.",
            param="part_ids",
            code="upload_size_mismatch",
        )
    # One completion at a time: the others see "completing" (shown as pending) and are refused.
    upload_id = row.id
    moved = await _move(session, upload_id, "pending", COMPLETING)
    await session.refresh(row)
    if not moved:
        _ensure_pending(row)
    folder = parts_dir(files_dir, row.id)
    held = HeldFile(files_dir / "tmp", "upload")
    try:
        sources = [folder / part_id for part_id in body.part_ids]
        found = await anyio.to_thread.run_sync(lambda: _join(sources, held, body.md5))
        if body.md5 is not None and found != body.md5.lower():
            raise InvalidRequest(
                f"The file's MD5 is {found}, not {body.md5}.", param="md5", code="md5_mismatch"
            )
        row.status, row.file_id = "completed", new_id("file-")
        file = await create_fetched_file(
            session=session,
            project_id=row.project_id,
            files_dir=files_dir,
            filename=row.filename,
            purpose=row.purpose,
            path=held.path,
            with_rows=[row],
            file_id=row.file_id,
            expires_after=row.file_expires_after,
        )
    except BaseException:
        held.path.unlink(missing_ok=True)
        with anyio.CancelScope(shield=True):
            await session.rollback()
            await _move(session, upload_id, COMPLETING, "pending")
            await session.refresh(row)
        raise
    finally:
        held.release()
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
    return file


async def cancel_upload(*, session: AsyncSession, row: Upload, files_dir: Path) -> Upload:
    """Cancel a pending upload; its parts are removed."""
    _ensure_pending(row)
    cancelled = await _move(session, row.id, "pending", "cancelled")
    await session.refresh(row)
    if not cancelled:
        _ensure_pending(row)  # completed, completing or expired meanwhile: says which
    folder = parts_dir(files_dir, row.id)
    await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, folder, ignore_errors=True))
    return row


async def expire_uploads(*, session: AsyncSession, files_dir: Path) -> int:
    """Mark pending uploads past their hour expired and remove their parts; return how many."""
    expired = list(
        (
            await session.exec(
                select(Upload.id).where(Upload.status == "pending", Upload.expires_at <= now())
            )
        ).all()
    )
    if expired:
        await session.exec(
            update(Upload)
            .where(col(Upload.id).in_(expired), col(Upload.status) == "pending")
            .values(status="expired")
        )
        await session.commit()
    for upload_id in expired:
        folder = parts_dir(files_dir, upload_id)
        await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, folder, ignore_errors=True))
    return len(expired)
