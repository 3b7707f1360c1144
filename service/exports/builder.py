"""The export builder: claims queued exports (or ones whose builder died), has the model's
engine write them, packs the result into one tar archive, and marks it ready.

An archive is written under a temporary name and renamed once complete, and only a `ready` row
is served, so a build cut short by a crash is never sent: its lease runs out and the next
builder starts it over. Progress goes to the export's row and, at each tenth, to its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import time
from pathlib import Path

import anyio
from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.engines.base import Engines, ExportFailed
from service.exports.models import ModelExport, ModelExportEvent
from service.exports.service import archive_path, exports_dir, target
from service.ids import new_id, now
from service.models.service import find_derived
from service.settings import Settings

log = logging.getLogger(__name__)

# A building export's lease, renewed every third of it while the build runs: an export whose
# builder died (a crash, a restart) is taken over this long after its last renewal.
LEASE_SECONDS = 15.0


class ExportBuilder:
    """Builds exports one at a time: `run()` in the background, `build_next()` is one step."""

    def __init__(self, *, database: Database, engines: Engines, settings: Settings) -> None:
        self.database = database
        self.engines = engines
        self.files_dir = settings.files_dir
        self.owner = new_id("builder-")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Ask for a step as soon as possible; safe from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, interval: float = 5.0) -> None:
        """Build whatever is queued, whenever woken or every `interval` seconds, until cancelled."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                while await self.build_next():
                    pass
            except Exception:
                log.exception("export builder step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def build_next(self, export_id: str | None = None) -> bool:
        """Claim one export (the oldest waiting, or `export_id`) and build it; False when
        none is waiting (or another builder holds it)."""
        row = await self._claim(export_id)
        if row is None:
            return False
        await self.build(row)
        return True

    async def _claim(self, export_id: str | None = None) -> ModelExport | None:
        at = time.time()
        claimable = or_(
            col(ModelExport.status) == "queued",
            (col(ModelExport.status) == "building") & (col(ModelExport.lease_expires_at) < at),
        )
        query = select(ModelExport).where(claimable).order_by(col(ModelExport.pk)).limit(5)
        if export_id is not None:
            query = query.where(col(ModelExport.id) == export_id)
        async with self.database.session() as session:
            candidates = (await session.exec(query)).all()
            for row in candidates:
                claimed = await session.exec(
                    update(ModelExport)
                    .where(col(ModelExport.id) == row.id, claimable)
                    .values(
                        status="building",
                        progress=0.0,
                        started_at=now(),
                        lease_owner=self.owner,
                        lease_expires_at=at + LEASE_SECONDS,
                    )
                )
                if claimed.rowcount == 1:
                    restarted = row.status == "building"
                    await self._event(
                        session,
                        row.id,
                        "Export restarted (the previous build stopped)"
                        if restarted
                        else "Export started",
                    )
                    await session.commit()
                    await session.refresh(row)
                    return row
        return None

    async def build(self, row: ModelExport) -> None:
        """Build one claimed export into its archive, or record why it failed."""
        folder = exports_dir(self.files_dir) / row.id
        work = folder.with_name(f"{row.id}.{self.owner}.tmp")
        shutil.rmtree(folder, ignore_errors=True)  # leftovers of a build cut short
        for leftover in exports_dir(self.files_dir).glob(f"{row.id}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
        work.mkdir(parents=True)
        reported = -1.0

        async def progress(fraction: float, message: str) -> None:
            nonlocal reported
            fraction = max(0.0, min(fraction, 1.0)) * 0.9  # packing is the last tenth
            tenth = int(fraction * 10) / 10
            async with self.database.session() as session:
                await self._renew(session, row, fraction)
                if tenth > reported:
                    reported = tenth
                    await self._event(session, row.id, message, fraction)
                await session.commit()

        heartbeat = asyncio.create_task(self._heartbeat(row))
        try:
            async with self.database.session() as session:
                derived = await find_derived(session, row.model)
            engine = self.engines.get(derived.engine) if derived else None
            if derived is None or engine is None:
                raise ExportFailed(f"The model '{row.model}' is no longer served here.")
            content = work / "content"
            await engine.export(target(derived), row.format, content, progress)
            part = work / row.filename
            digest = await anyio.to_thread.run_sync(_pack, content, part, Path(row.filename).stem)
            await progress(1.0, "Archive written")
            folder.mkdir(parents=True, exist_ok=True)
            size = part.stat().st_size
            part.rename(folder / row.filename)  # complete before it can be served
            await self._finish(row, status="ready", bytes=size, sha256=digest)
            log.info("export %s of %s as %s: %d bytes", row.id, row.model, row.format, size)
        except ExportFailed as error:
            await self._finish(row, status="failed", error=str(error))
        except Exception:
            log.exception("export %s failed", row.id)
            await self._finish(row, status="failed", error="The export failed; see the server log.")
        finally:
            heartbeat.cancel()
            shutil.rmtree(work, ignore_errors=True)

    async def _heartbeat(self, row: ModelExport) -> None:
        """Renew the lease while the build runs, whether or not it reports progress."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            async with self.database.session() as session:
                await self._renew(session, row)
                await session.commit()

    async def _renew(
        self, session: AsyncSession, row: ModelExport, fraction: float | None = None
    ) -> None:
        """Extend this builder's lease (and record progress, when given)."""
        values: dict[str, float] = {"lease_expires_at": time.time() + LEASE_SECONDS}
        if fraction is not None:
            values["progress"] = fraction
        await session.exec(
            update(ModelExport)
            .where(col(ModelExport.id) == row.id, col(ModelExport.lease_owner) == self.owner)
            .values(**values)
        )

    async def _finish(self, row: ModelExport, *, status: str, **values: object) -> None:
        async with self.database.session() as session:
            result = await session.exec(
                update(ModelExport)
                .where(col(ModelExport.id) == row.id, col(ModelExport.lease_owner) == self.owner)
                .values(
                    status=status,
                    progress=1.0 if status == "ready" else row.progress,
                    finished_at=now(),
                    lease_owner=None,
                    lease_expires_at=None,
                    **values,
                )
            )
            if result.rowcount == 1:
                message = (
                    f"Export ready: {archive_path(self.files_dir, row).name}"
                    if status == "ready"
                    else f"Export failed: {values.get('error')}"
                )
                await self._event(
                    session, row.id, message, level="info" if status == "ready" else "error"
                )
            await session.commit()

    @staticmethod
    async def _event(
        session: AsyncSession,
        export_id: str,
        message: str,
        fraction: float | None = None,
        *,
        level: str = "info",
    ) -> None:
        session.add(
            ModelExportEvent(
                id=new_id("exportevent-"),
                export_id=export_id,
                created_at=now(),
                level=level,
                message=message[:1000],
                data={"progress": round(fraction, 3)} if fraction is not None else None,
            )
        )


def _pack(content: Path, archive: Path, top: str) -> str:
    """Write `content` as an uncompressed tar under the folder `top` (weights do not compress),
    flushed to disk; return its SHA-256."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(content.rglob("*")):
            tar.add(path, arcname=f"{top}/{path.relative_to(content)}", recursive=False)
    digest = hashlib.sha256()
    with archive.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
        os.fsync(stream.fileno())
    return digest.hexdigest()
