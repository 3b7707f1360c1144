"""Rules of the email studio: redaction, settings, datasets from history, scope aliases.

The studio reaches training through the other domains' services (files, jobs, models), never an
engine directly.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pydantic
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidRequest, NotFound
from service.files.service import Generated, content_path, create_generated_files, get_file
from service.ids import new_id, now
from service.jobs.service import committed_spend
from service.models import aliases
from service.models.models import ModelAlias
from service.models.registry import Method, ModelRegistry
from service.models.service import visible_derived
from service.pagination import page
from service.projects.service import get_project
from service.studio import cleaning
from service.studio.datasets import (
    Built,
    EmailRecord,
    Options,
    PreferencePair,
    build,
    build_preferences,
    jsonl,
)
from service.studio.models import EmailDataset, StudioEmail, StudioSettings
from service.studio.redaction import Redactor
from service.studio.schemas import (
    DatasetCreate,
    PreferencesCreate,
    PromoteRequest,
    RedactedEntity,
    RedactedText,
    RedactionList,
    RedactRequest,
    SettingsObject,
    SettingsUpdate,
)
from service.training_data.report import build_report

Row = TypeVar("Row", bound=pydantic.BaseModel)
log = logging.getLogger(__name__)


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
    if body.feedback_thresholds is not None:
        for scope in body.feedback_thresholds:
            aliases.alias_of(scope)  # a malformed scope is a 400
        row.feedback_thresholds = dict(body.feedback_thresholds)
    if "budget_usd" in body.model_fields_set:
        project = await get_project(session=session, project_id=project_id)
        project.budget_usd = body.budget_usd
        session.add(project)
    row.updated_at = now()
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


async def settings_object(*, session: AsyncSession, row: StudioSettings) -> SettingsObject:
    """Return the wire object of a project's settings, with its budget and spending."""
    project = await get_project(session=session, project_id=row.project_id)
    return SettingsObject.from_row(
        row,
        budget_usd=project.budget_usd,
        spent_usd=await committed_spend(session=session, project_id=row.project_id),
    )


# --- datasets ----------------------------------------------------------------------------------


def _read_jsonl(path: Path, model: type[Row], *, file_id: str) -> list[Row]:
    """Read a file of JSON Lines into models; a bad line is a 400 naming its number."""
    rows = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(model.model_validate_json(line))
            except pydantic.ValidationError as error:
                detail = error.errors()[0]
                where = ".".join(str(p) for p in detail["loc"]) or "line"
                raise InvalidRequest(
                    f"Line {number} of file {file_id} is not a valid record: "
                    f"{where}: {detail['msg']}.",
                    param="file_id",
                    code="invalid_history_record",
                ) from None
    return rows


async def _records(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    inline: Sequence[Row] | None,
    file_id: str | None,
    model: type[Row],
) -> Sequence[Row]:
    """Return the records given inline or in a file of the project."""
    if file_id is None:
        return inline or []
    row = await get_file(session=session, project_id=project_id, file_id=file_id)
    path = content_path(files_dir, row.id)
    return await anyio.to_thread.run_sync(lambda: _read_jsonl(path, model, file_id=file_id))


def _estimates(built: Built, registry: ModelRegistry, method: Method) -> dict[str, Any]:
    """Token statistics of the training rows and what training them would take per base model."""
    if not built.training:
        return {"tokens": None, "models": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "training.jsonl"
        path.write_bytes(jsonl(built.training))
        tokens = None
        models = []
        for base in registry.all():
            if base.is_closed_to_training() or method not in base.methods:
                continue
            report = build_report(path, method=method, base=base, n_epochs=None, threads=0)
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


async def _options(
    *, session: AsyncSession, project_id: str, body: DatasetCreate | PreferencesCreate
) -> Options:
    settings = await get_settings(session=session, project_id=project_id)
    return Options(
        min_rating=getattr(body, "min_rating", 0),
        redact=settings.redact if body.redact is None else body.redact,
        validation_fraction=body.validation_fraction,
        department=body.department,
        user_id=getattr(body, "user_id", None),
        system_prompts=settings.system_prompts,
        user_templates=settings.user_templates,
    )


async def _save(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    built: Built,
    method: Method,
    options: Options,
    file_id: str | None,
    estimates: dict[str, Any],
    param: str,
) -> EmailDataset:
    """Store a built dataset's files and its row together; refuse one with nothing to train."""
    if not built.training:
        raise InvalidRequest(
            f"None of the {built.report['n_records']} records given is usable for training: "
            + json.dumps(built.report["dropped"])
            + ".",
            param=param,
            code="empty_dataset",
        )
    dataset_id = new_id("emailds_")
    scope = options.department or options.user_id or "all"
    contents = [("train", built.training)] + (
        [("validation", built.validation)] if built.validation else []
    )
    files = [
        Generated(f"{dataset_id}-{scope}-{part}.jsonl", jsonl(rows), new_id("file-"))
        for part, rows in contents
    ]
    row = EmailDataset(
        id=dataset_id,
        project_id=project_id,
        created_at=now(),
        method=method,
        training_file=str(files[0].file_id),
        validation_file=str(files[1].file_id) if len(files) > 1 else None,
        department=options.department,
        user_id=options.user_id,
        redacted=options.redact,
        options={
            "min_rating": options.min_rating,
            "redact": options.redact,
            "validation_fraction": options.validation_fraction,
            "department": options.department,
            "user_id": options.user_id,
            "source": "file" if file_id else "inline",
            "file_id": file_id,
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
        personal_data=not options.redact,
    )
    return row


async def remember_emails(
    *, session: AsyncSession, project_id: str, records: Sequence[EmailRecord]
) -> None:
    """Keep the history's mails so that feedback can name them by id (latest copy wins)."""
    by_id = {record.id: record for record in records}
    ids = list(by_id)
    existing: dict[str, StudioEmail] = {}
    for start in range(0, len(ids), 500):
        rows = await session.exec(
            select(StudioEmail).where(
                StudioEmail.project_id == project_id,
                col(StudioEmail.email_id).in_(ids[start : start + 500]),
            )
        )
        existing.update({row.email_id: row for row in rows})
    for email_id, record in by_id.items():
        row = existing.get(email_id) or StudioEmail(
            project_id=project_id, email_id=email_id, context="", subject="", body="", updated_at=0
        )
        row.user_id, row.department, row.language = (
            record.user_id,
            record.department,
            record.language,
        )
        row.category, row.context, row.subject = record.category, record.context, record.subject
        row.body, row.rating, row.updated_at = record.body, record.rating, now()
        session.add(row)
    await session.commit()


async def create_dataset(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    body: DatasetCreate,
    redactor: LazyRedactor,
    registry: ModelRegistry,
    remember: bool = True,
) -> EmailDataset:
    """Build a chat dataset from e-mail history and store its files and row together; the
    history's mails are remembered so that feedback can name them (unless `remember` is off)."""
    records = await _records(
        session=session,
        project_id=project_id,
        files_dir=files_dir,
        inline=body.emails,
        file_id=body.file_id,
        model=EmailRecord,
    )
    if remember:
        await remember_emails(session=session, project_id=project_id, records=records)
    options = await _options(session=session, project_id=project_id, body=body)
    engine = await redactor.get() if options.redact else None

    def run() -> tuple[Built, dict[str, Any]]:
        built = build(records, options, engine)
        return built, _estimates(built, registry, "supervised")

    built, estimates = await anyio.to_thread.run_sync(run)
    return await _save(
        session=session,
        project_id=project_id,
        files_dir=files_dir,
        built=built,
        method="supervised",
        options=options,
        file_id=body.file_id,
        estimates=estimates,
        param="emails" if body.emails is not None else "file_id",
    )


async def create_preferences(
    *,
    session: AsyncSession,
    project_id: str,
    files_dir: Path,
    body: PreferencesCreate,
    redactor: LazyRedactor,
    registry: ModelRegistry,
) -> EmailDataset:
    """Build a DPO dataset from preference pairs and store its files and row together."""
    pairs = await _records(
        session=session,
        project_id=project_id,
        files_dir=files_dir,
        inline=body.pairs,
        file_id=body.file_id,
        model=PreferencePair,
    )
    options = await _options(session=session, project_id=project_id, body=body)
    engine = await redactor.get() if options.redact else None

    def run() -> tuple[Built, dict[str, Any]]:
        built = build_preferences(pairs, options, engine)
        return built, _estimates(built, registry, "dpo")

    built, estimates = await anyio.to_thread.run_sync(run)
    return await _save(
        session=session,
        project_id=project_id,
        files_dir=files_dir,
        built=built,
        method="dpo",
        options=options,
        file_id=body.file_id,
        estimates=estimates,
        param="pairs" if body.pairs is not None else "file_id",
    )


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


# --- aliases -----------------------------------------------------------------------------------


async def _ensure_usable(
    *, session: AsyncSession, registry: ModelRegistry, project_id: str, model: str
) -> None:
    """Refuse, with a 400, a model the project cannot call."""
    if aliases.is_alias(model):
        raise InvalidRequest("Promote a model, not an alias.", param="model", code="invalid_value")
    if registry.resolve(model) is None and (
        await visible_derived(session, project_id, model) is None
    ):
        raise InvalidRequest(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


async def promote_scope(
    *,
    session: AsyncSession,
    registry: ModelRegistry,
    project_id: str,
    scope: str,
    body: PromoteRequest,
) -> ModelAlias:
    """Point the scope's alias at a model the project may call, and record why."""
    alias = aliases.alias_of(scope)
    await _ensure_usable(
        session=session, registry=registry, project_id=project_id, model=body.model
    )
    return await aliases.promote(
        session=session,
        project_id=project_id,
        alias=alias,
        model=body.model,
        reason=body.reason,
        evaluation_id=body.evaluation_id,
    )


async def get_scope_alias(*, session: AsyncSession, project_id: str, scope: str) -> ModelAlias:
    """Return the scope's alias, or raise NotFound when nothing was promoted for it."""
    row = await aliases.find_alias(
        session=session, project_id=project_id, alias=aliases.alias_of(scope)
    )
    if row is None:
        raise NotFound(f"No model was promoted for scope '{scope}'.", param="scope")
    return row
