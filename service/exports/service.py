"""Rules of model exports: which models may leave, one export per model and format, and where
its archive lives. Building is `builder.py`'s."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service import pagination
from service.db import flag_commit
from service.engines.base import Engines, ModelTarget
from service.errors import InvalidRequest, NotFound
from service.exports.models import ModelExport, ModelExportEvent
from service.ids import new_id, now
from service.models.service import Derived, find_derived

# The commit-hook topic that wakes this process's builder when an export is asked for.
EXPORTS_TOPIC = "ft_exports"


def exports_dir(files_dir: Path) -> Path:
    """The folder of every export's archive and of builds under way."""
    return files_dir / "exports"


def archive_path(files_dir: Path, row: ModelExport) -> Path:
    """Where a ready export's archive is."""
    return exports_dir(files_dir) / row.id / row.filename


def archive_name(model: str, fmt: str) -> str:
    """A file name for the archive: the model's name made safe for file systems."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")
    return f"{stem}-{fmt}.tar"


async def exportable(
    *, session: AsyncSession, engines: Engines, project_id: str, model: str, fmt: str
) -> Derived:
    """Return the project's fine-tuned model or checkpoint `model`, if its engine can write
    `fmt`; a model of another project is 404, as everywhere."""
    derived = await find_derived(session, model)
    if derived is None or derived.project_id != project_id:
        if engines.registry.resolve(model) is not None:
            raise InvalidRequest(
                f"'{model}' is a base model: only fine-tuned models and checkpoints are exported.",
                param="model",
                code="model_not_exportable",
            )
        raise NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    engine = engines.get(derived.engine)
    if engine is None or fmt not in engine.export_formats:
        raise InvalidRequest(
            f"The model '{model}' cannot be exported as '{fmt}': its weights are kept by "
            f"'{derived.engine}', which does not hand them out in that format.",
            param="format",
            code="model_not_exportable",
        )
    return derived


def target(derived: Derived) -> ModelTarget:
    """The engine's view of the model to export."""
    return ModelTarget(name=derived.name, base_model=derived.base_model, location=derived.location)


async def request_export(
    *, session: AsyncSession, files_dir: Path, derived: Derived, fmt: str
) -> ModelExport:
    """Return the export of `derived` in `fmt`, queueing a build when there is none, when the
    last one failed, or when its archive is gone."""
    row = await _find(session, derived.project_id, derived.name, fmt)
    if row is None:
        row = ModelExport(
            id=new_id("export-"),
            project_id=derived.project_id,
            model=derived.name,
            format=fmt,
            status="queued",
            filename=archive_name(derived.name, fmt),
            created_at=now(),
        )
        session.add(row)
        try:
            await _queued(session, row, f"Export of {derived.name} as {fmt} queued")
        except IntegrityError:  # asked twice at once: the other request's row is the one
            await session.rollback()
            found = await _find(session, derived.project_id, derived.name, fmt)
            assert found is not None
            return found
        return row
    lost = row.status == "ready" and not archive_path(files_dir, row).is_file()
    if row.status == "failed" or lost:
        row.status, row.progress, row.error = "queued", 0.0, None
        row.bytes = row.sha256 = row.finished_at = None
        session.add(row)
        await _queued(session, row, "Export queued again")
    return row


async def _queued(session: AsyncSession, row: ModelExport, message: str) -> None:
    session.add(
        ModelExportEvent(
            id=new_id("exportevent-"),
            export_id=row.id,
            created_at=now(),
            level="info",
            message=message,
        )
    )
    flag_commit(session, EXPORTS_TOPIC)
    await session.commit()
    await session.refresh(row)


async def _find(session: AsyncSession, project_id: str, model: str, fmt: str) -> ModelExport | None:
    return (
        await session.exec(
            select(ModelExport).where(
                ModelExport.project_id == project_id,
                ModelExport.model == model,
                ModelExport.format == fmt,
            )
        )
    ).first()


async def list_exports(*, session: AsyncSession, project_id: str, model: str) -> list[ModelExport]:
    """The model's exports, one per format asked for."""
    rows = await session.exec(
        select(ModelExport)
        .where(ModelExport.project_id == project_id, ModelExport.model == model)
        .order_by(col(ModelExport.pk))
    )
    return list(rows.all())


async def get_export(
    *, session: AsyncSession, project_id: str, model: str, fmt: str
) -> ModelExport:
    """The model's export in `fmt`, or 404."""
    row = await _find(session, project_id, model, fmt)
    if row is None:
        raise NotFound(
            f"No export of '{model}' as '{fmt}' was asked for; GET its export to start one.",
            param="format",
            code="export_not_found",
        )
    return row


async def list_events(
    *, session: AsyncSession, row: ModelExport, after: str | None, limit: int
) -> tuple[list[ModelExportEvent], bool]:
    """A page of the export's events, newest first."""
    return await pagination.page(
        session,
        ModelExportEvent,
        where=[col(ModelExportEvent.export_id) == row.id],
        after=after,
        limit=limit,
    )


async def forget_model(*, session: AsyncSession, files_dir: Path, model: str) -> None:
    """Remove every export of a deleted model: rows first, then archives (a crash between
    leaves files no row serves, never a row without its file)."""
    rows = (await session.exec(select(ModelExport).where(ModelExport.model == model))).all()
    await session.exec(delete(ModelExport).where(col(ModelExport.model) == model))
    await session.commit()
    for row in rows:
        shutil.rmtree(exports_dir(files_dir) / row.id, ignore_errors=True)
