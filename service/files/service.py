"""Rules for files: storing uploads, scoping by project, deletion, and cached training checks."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio
from sqlalchemy import ColumnElement, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidRequest, NotFound
from service.files.models import File, FileCheck
from service.files.schemas import NOT_DOWNLOADABLE, UPLOAD_PURPOSES
from service.files.upload import ReceivedUpload
from service.ids import new_id, now
from service.models.registry import BaseModelSpec, Method, ensure_supports
from service.pagination import page
from service.training_data.formats import Format, ParseResult, validate_file, validate_lines
from service.training_data.report import CheckReport, build_report

EXPIRY_RANGE = (3600, 2_592_000)
# OpenAI expires batch files after 30 days unless told otherwise; other purposes persist.
DEFAULT_EXPIRY = {"batch": 2_592_000}


def content_path(files_dir: Path, file_id: str) -> Path:
    """Return where a file's content is stored."""
    return files_dir / file_id


def _visible(project_id: str) -> list[ColumnElement[bool]]:
    # Expired files behave as deleted.
    return [
        col(File.project_id) == project_id,
        or_(col(File.expires_at).is_(None), col(File.expires_at) > now()),
    ]


def _expiry(fields: dict[str, str], *, purpose: str, created_at: int) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        default = DEFAULT_EXPIRY.get(purpose)
        return created_at + default if default else None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor] must be 'created_at'.", param="expires_after.anchor"
        )
    if seconds is None or not (seconds.isascii() and seconds.isdigit()):
        raise InvalidRequest(
            "expires_after[seconds] must be an integer.", param="expires_after.seconds"
        )
    low, high = EXPIRY_RANGE
    if not low <= int(seconds) <= high:
        raise InvalidRequest(
            f"expires_after[seconds] must be between {low} and {high}.",
            param="expires_after.seconds",
        )
    return created_at + int(seconds)


def _reject_bad_training_data(parsed: ParseResult | None) -> None:
    if parsed is None or not parsed.errors:
        return
    first = parsed.errors[0]
    more = parsed.n_errors - 1
    suffix = f" ({more} more error{'s' if more != 1 else ''} in the file)" if more > 0 else ""
    raise InvalidRequest(
        f"Invalid file for fine-tuning: {first.message}{suffix}", param="file", code=first.code
    )


async def create_file(
    *, session: AsyncSession, project_id: str, files_dir: Path, upload: ReceivedUpload
) -> File:
    """Store a received upload as a file of the project; bad training data stores nothing."""
    purpose = upload.fields.get("purpose")
    if purpose is None:
        raise InvalidRequest(
            "Missing required parameter: 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"Invalid value for 'purpose': '{purpose}'. Expected one of: "
            + ", ".join(UPLOAD_PURPOSES)
            + ".",
            param="purpose",
            code="invalid_value",
        )
    if upload.path is None or upload.filename is None:
        raise InvalidRequest(
            "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    created_at = now()
    expires_at = _expiry(upload.fields, purpose=purpose, created_at=created_at)
    parsed = upload.parsed if purpose == "fine-tune" else None
    _reject_bad_training_data(parsed)

    row = File(
        id=new_id("file-"),
        project_id=project_id,
        bytes=upload.size,
        created_at=created_at,
        expires_at=expires_at,
        filename=upload.filename,
        purpose=purpose,
        sha256=upload.sha256,
        format=parsed.format if parsed else None,
        stats=parsed.stats if parsed else None,
    )
    return await _store(session, row, files_dir, upload.move_to)


async def create_fetched_file(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    filename: str,
    purpose: str,
    path: Path,
    with_rows: Sequence[SQLModel] = (),
    file_id: str | None = None,
    expires_after: int | None = None,
) -> File:
    """Store a file fetched from elsewhere (a provider's, or joined from an upload's parts),
    with the checks of an upload: training data that breaks a rule is refused with the first
    error, and nothing is stored. `with_rows` are committed with it.

    `path` is a temporary file of the caller's; it is moved into place.
    """
    parsed = None
    if purpose == "fine-tune":
        parsed = await anyio.to_thread.run_sync(lambda: validate_file(path))
        _reject_bad_training_data(parsed)
    digest = await anyio.to_thread.run_sync(lambda: _sha256(path))
    created_at = now()
    row = File(
        id=file_id or new_id("file-"),
        project_id=project_id,
        bytes=path.stat().st_size,
        created_at=created_at,
        expires_at=created_at + expires_after if expires_after is not None else None,
        filename=filename[:255] or "upload",
        purpose=purpose,
        sha256=digest,
        format=parsed.format if parsed else None,
        stats=parsed.stats if parsed else None,
    )

    def place(destination: Path) -> None:
        path.replace(destination)

    return await _store(session, row, files_dir, place, with_rows)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Generated:
    """A file the service writes itself: its name and content."""

    filename: str
    content: bytes
    file_id: str | None = None


async def create_file_from_bytes(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    filename: str,
    purpose: str,
    content: bytes,
    file_id: str | None = None,
    with_rows: Sequence[SQLModel] = (),
) -> File:
    """Store content produced by the service itself (e.g. a job's results file).

    `with_rows` (which may refer to `file_id`) are committed with the file, or not at all.
    """
    (row,) = await create_generated_files(
        session=session,
        project_id=project_id,
        files_dir=files_dir,
        purpose=purpose,
        files=[Generated(filename, content, file_id)],
        with_rows=with_rows,
    )
    return row


async def create_generated_files(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    purpose: str,
    files: Sequence[Generated],
    with_rows: Sequence[SQLModel] = (),
    personal_data: bool = False,
) -> list[File]:
    """Store files the service wrote (a studio dataset's training and validation files).

    Training data gets the checks of an upload. All files and `with_rows` are committed
    together, or nothing is. `personal_data` marks training data that was not redacted: only
    engines that keep data on this machine train on it.
    """
    rows: list[File] = []
    for generated in files:
        parsed = None
        if purpose == "fine-tune":
            parsed = await anyio.to_thread.run_sync(_validate_content, generated.content)
            _reject_bad_training_data(parsed)
        rows.append(
            File(
                id=generated.file_id or new_id("file-"),
                project_id=project_id,
                bytes=len(generated.content),
                created_at=now(),
                filename=generated.filename,
                purpose=purpose,
                sha256=hashlib.sha256(generated.content).hexdigest(),
                format=parsed.format if parsed else None,
                stats=parsed.stats if parsed else None,
                personal_data=personal_data,
            )
        )

    def writer(content: bytes) -> Callable[[Path], None]:
        def write(destination: Path) -> None:
            tmp = destination.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.replace(destination)

        return write

    placed = [(row, writer(g.content)) for row, g in zip(rows, files, strict=True)]
    await _store_many(session, placed, files_dir, with_rows)
    return rows


def _validate_content(content: bytes) -> ParseResult:
    return validate_lines(content.splitlines(keepends=True))


async def _store(
    session: AsyncSession,
    row: File,
    files_dir: Path,
    place: Callable[[Path], None],
    with_rows: Sequence[SQLModel] = (),
) -> File:
    await _store_many(session, [(row, place)], files_dir, with_rows)
    return row


async def _store_many(
    session: AsyncSession,
    placed: Sequence[tuple[File, Callable[[Path], None]]],
    files_dir: Path,
    with_rows: Sequence[SQLModel] = (),
) -> None:
    destinations: list[Path] = []
    try:
        # Contents first, then the rows: a failed commit removes the contents again, so neither
        # a row without content nor content without a row survives.
        for row, place in placed:
            destination = content_path(files_dir, row.id)
            destination.parent.mkdir(parents=True, exist_ok=True)
            await anyio.to_thread.run_sync(place, destination)
            destinations.append(destination)
        session.add_all([row for row, _ in placed])
        if with_rows:
            await session.flush()  # the file rows first: the others may refer to them
            session.add_all(with_rows)
        await session.commit()
    except BaseException:
        for destination in destinations:
            destination.unlink(missing_ok=True)
        raise


async def get_file(*, session: AsyncSession, project_id: str, file_id: str) -> File:
    """Return the project's file, or raise NotFound (also for other projects' files)."""
    row = (
        await session.exec(select(File).where(File.id == file_id, *_visible(project_id)))
    ).first()
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return row


async def list_files(
    *,
    session: AsyncSession,
    project_id: str,
    purpose: str | None,
    after: str | None,
    limit: int,
    order: str,
) -> tuple[list[File], bool]:
    """Return a page of the project's files, by creation order."""
    where = _visible(project_id)
    if purpose is not None:
        where.append(col(File.purpose) == purpose)
    return await page(
        session, File, where=where, after=after, limit=limit, descending=order == "desc"
    )


async def delete_file(*, session: AsyncSession, row: File, files_dir: Path) -> None:
    """Delete a file (already loaded within the caller's project) and its content."""
    file_id = row.id
    await session.delete(row)
    await session.commit()
    # The row is gone first: a crash here leaves an orphan file, never a row without content.
    content_path(files_dir, file_id).unlink(missing_ok=True)


def downloadable_path(row: File, files_dir: Path) -> Path:
    """Return the path of a file's content, refusing purposes that are not downloadable."""
    if row.purpose in NOT_DOWNLOADABLE:
        raise InvalidRequest(f"Not allowed to download files of purpose: {row.purpose}")
    path = content_path(files_dir, row.id)
    if not path.is_file():  # deleted meanwhile
        raise NotFound(f"No such File object: {row.id}", param="id")
    return path


async def check_file(
    *,
    session: AsyncSession,
    row: File,
    files_dir: Path,
    method: Method,
    base: BaseModelSpec,
    n_epochs: int | None,
) -> CheckReport:
    """Return the validation report of a file for a method and base model (cached)."""
    ensure_supports(base, method, param="method")
    if row.purpose != "fine-tune":
        raise InvalidRequest(
            f"File {row.id} has purpose '{row.purpose}'; fine-tuning needs purpose 'fine-tune'.",
            code="invalid_file_purpose",
        )
    cached = (
        await session.exec(
            select(FileCheck).where(
                FileCheck.file_id == row.id, FileCheck.method == method, FileCheck.model == base.id
            )
        )
    ).first()
    if cached is not None:
        report = CheckReport.model_validate(cached.report)
    else:
        path = content_path(files_dir, row.id)
        file_format = cast(Format | None, row.format)
        # Building a report takes seconds on a large file: hold no transaction meanwhile.
        await session.commit()
        report = await anyio.to_thread.run_sync(
            lambda: build_report(
                path, method=method, base=base, n_epochs=None, format_hint=file_format
            )
        )
        session.add(
            FileCheck(
                file_id=row.id,
                method=method,
                model=base.id,
                created_at=now(),
                report=report.model_dump(mode="json"),
            )
        )
        # Two concurrent checks of one file compute the same report; the loser's row is dropped.
        with contextlib.suppress(IntegrityError):
            await session.commit()
        await session.rollback()
    if n_epochs is None:
        return report
    return report.with_epochs(n_epochs, price_per_million=base.training_price_per_million)
