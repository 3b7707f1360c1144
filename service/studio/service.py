"""Rules of the email studio: redaction, settings, datasets from history.

The studio reaches training through the other domains' services (files, jobs, models), never an
engine directly.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import pydantic
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidRequest, NotFound
from service.files.service import Generated, content_path, create_generated_files, get_file
from service.ids import new_id, now
from service.models.registry import ModelRegistry
from service.pagination import page
from service.studio import cleaning
from service.studio.datasets import Built, EmailRecord, Options, build, jsonl
from service.studio.models import EmailDataset, StudioSettings
from service.studio.redaction import Redactor
from service.studio.schemas import (
    DatasetCreate,
    RedactedEntity,
    RedactedText,
    RedactionList,
    RedactRequest,
    SettingsUpdate,
)
from service.training_data.report import build_report


class LazyRedactor:
    """The process's one `Redactor`, built on first use (its name lists take seconds to load)."""

    def __init__(self) -> None:
        self._redactor: Redactor | None = None
        self._lock = anyio.Lock()

    async def get(self) -> Redactor:
        """Return the redactor, building it in a worker thread the first time."""
        async with self._lock:
            if self._redactor is None:
                self._redactor = await anyio.to_thread.run_sync(Redactor)
            return self._redactor


async def redact_texts(*, redactor: Redactor, body: RedactRequest) -> RedactionList:
    """Redact texts with one set of placeholders; the language is detected where not given."""

    def run() -> RedactionList:
        languages = (
            [body.language] * len(body.texts)
            if body.language
            else [lang or "fr" for lang in cleaning.detect_languages(body.texts)]
        )
        redacted, _ = redactor.redact(body.texts, languages=languages)
        return RedactionList(
            data=[
                RedactedText(
                    text=item.text,
                    entities=[RedactedEntity.model_validate(asdict(e)) for e in item.entities],
                )
                for item in redacted
            ]
        )

    return await anyio.to_thread.run_sync(run)


# --- settings ----------------------------------------------------------------------------------


async def get_settings(*, session: AsyncSession, project_id: str) -> StudioSettings:
    """Return the project's studio settings (the defaults, unsaved, when it has none)."""
    row = (
        await session.exec(select(StudioSettings).where(StudioSettings.project_id == project_id))
    ).first()
    return row or StudioSettings(project_id=project_id, updated_at=now())


async def update_settings(
    *, session: AsyncSession, project_id: str, body: SettingsUpdate
) -> StudioSettings:
    """Change the fields given and keep the others."""
    row = await get_settings(session=session, project_id=project_id)
    if body.system_prompts is not None:
        row.system_prompts = {
            department: {str(k): v for k, v in prompts.items()}
            for department, prompts in body.system_prompts.items()
        }
    if body.user_templates is not None:
        row.user_templates = {str(k): v for k, v in body.user_templates.items()}
    if body.redact is not None:
        row.redact = body.redact
    row.updated_at = now()
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


# --- datasets ----------------------------------------------------------------------------------


async def _records_from_file(
    *, session: AsyncSession, project_id: str, file_id: str, files_dir: Path
) -> list[EmailRecord]:
    row = await get_file(session=session, project_id=project_id, file_id=file_id)
    path = content_path(files_dir, row.id)

    def read() -> list[EmailRecord]:
        records = []
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(EmailRecord.model_validate_json(line))
                except pydantic.ValidationError as error:
                    detail = error.errors()[0]
                    where = ".".join(str(p) for p in detail["loc"]) or "line"
                    raise InvalidRequest(
                        f"Line {number} of file {file_id} is not a history record: "
                        f"{where}: {detail['msg']}.",
                        param="file_id",
                        code="invalid_history_record",
                    ) from None
        return records

    return await anyio.to_thread.run_sync(read)


def _estimates(built: Built, registry: ModelRegistry) -> dict[str, Any]:
    """Token statistics of the training rows and what training them would take per base model."""
    if not built.training:
        return {"tokens": None, "models": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "training.jsonl"
        path.write_bytes(jsonl(built.training))
        tokens = None
        models = []
        for base in registry.all():
            if base.is_closed_to_training() or "supervised" not in base.methods:
                continue
            report = build_report(path, method="supervised", base=base, n_epochs=None, threads=0)
            if tokens is None:
                tokens = {
                    "per_example": report.tokens_per_example.model_dump(),
                    "total": report.total_tokens,
                    "tokenizer": base.tokenizer,
                }
            models.append(
                {
                    "model": base.id,
                    "n_epochs": report.n_epochs,
                    "billed_tokens": report.billed_tokens,
                    "estimated_cost_usd": report.estimated_cost_usd,
                    "n_examples_over_limit": report.n_examples_over_limit,
                }
            )
    return {"tokens": tokens, "models": models}


async def create_dataset(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    body: DatasetCreate,
    redactor: LazyRedactor,
    registry: ModelRegistry,
) -> EmailDataset:
    """Build a dataset from history and store its files and row together."""
    records: Sequence[EmailRecord]
    if body.file_id is not None:
        records = await _records_from_file(
            session=session, project_id=project_id, file_id=body.file_id, files_dir=files_dir
        )
    else:
        records = body.emails or []
    settings = await get_settings(session=session, project_id=project_id)
    redact = settings.redact if body.redact is None else body.redact
    options = Options(
        min_rating=body.min_rating,
        redact=redact,
        validation_fraction=body.validation_fraction,
        department=body.department,
        user_id=body.user_id,
        system_prompts=settings.system_prompts,
        user_templates=settings.user_templates,
    )
    engine = await redactor.get() if redact else None

    def run() -> tuple[Built, dict[str, Any]]:
        built = build(records, options, engine)
        return built, _estimates(built, registry)

    built, estimates = await anyio.to_thread.run_sync(run)
    if not built.training:
        raise InvalidRequest(
            f"No mail of the {len(records)} given is usable for training: "
            + json.dumps(built.report["dropped"])
            + ".",
            param="emails" if body.emails is not None else "file_id",
            code="empty_dataset",
        )
    dataset_id = new_id("emailds_")
    scope = body.department or body.user_id or "all"
    files = [Generated(f"{dataset_id}-{scope}-train.jsonl", jsonl(built.training))]
    if built.validation:
        files.append(Generated(f"{dataset_id}-{scope}-validation.jsonl", jsonl(built.validation)))
    ids = [new_id("file-") for _ in files]
    files = [
        Generated(f.filename, f.content, file_id) for f, file_id in zip(files, ids, strict=True)
    ]
    row = EmailDataset(
        id=dataset_id,
        project_id=project_id,
        created_at=now(),
        training_file=ids[0],
        validation_file=ids[1] if len(ids) > 1 else None,
        department=body.department,
        user_id=body.user_id,
        redacted=redact,
        options={
            "min_rating": body.min_rating,
            "redact": redact,
            "validation_fraction": body.validation_fraction,
            "department": body.department,
            "user_id": body.user_id,
            "source": "file" if body.file_id else "inline",
            "file_id": body.file_id,
        },
        report={**built.report, "estimates": estimates},
    )
    await create_generated_files(
        session=session,
        project_id=project_id,
        files_dir=files_dir,
        purpose="fine-tune",
        files=files,
        with_rows=[row],
        personal_data=not redact,
    )
    return row


async def get_dataset(*, session: AsyncSession, project_id: str, dataset_id: str) -> EmailDataset:
    """Return the project's dataset, or raise NotFound (also for other projects' datasets)."""
    row = (
        await session.exec(
            select(EmailDataset).where(
                EmailDataset.id == dataset_id, EmailDataset.project_id == project_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"No such dataset: {dataset_id}", param="dataset_id")
    return row


async def list_datasets(
    *, session: AsyncSession, project_id: str, after: str | None, limit: int
) -> tuple[list[EmailDataset], bool]:
    """Return a page of the project's datasets, newest first."""
    return await page(
        session,
        EmailDataset,
        where=[col(EmailDataset.project_id) == project_id],
        after=after,
        limit=limit,
        descending=True,
    )
