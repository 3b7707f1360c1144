"""Leaving a provider with nothing lost: inventory, import, record.

1. **inventory**: the account's fine-tuning files, jobs and fine-tuned models, with their
   shutdown dates, and what of them is here already.
2. **import**: every training, validation and results file is downloaded into a project (with
   the checks of an upload); every job is recorded here (status, method, hyperparameters, events
   with metrics, checkpoints, fine-tuned model), marked imported and read-only.
3. **record**: each imported fine-tuned model answers a set of prompts (the job's validation
   file; else a held-out sample of its training prompts; or a file given), and the prompts with
   its answers are kept as an ordinary chat-format file, so its behaviour outlives the model.

Each step can be interrupted and run again: what is done is found by the provider's ids (files,
jobs) or the model's name (records) and not done twice. `progress(step, done, total)` reports.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from service.db import Database
from service.engines.upstream.models import ModelRecord, UpstreamFile, UpstreamJob
from service.engines.upstream.sync import CLOSED, STATUSES, local_copy
from service.errors import APIError, Conflict
from service.files.models import File
from service.files.service import content_path, create_fetched_file
from service.ids import new_id, now
from service.jobs import engine_calls
from service.jobs.engine_calls import ImportedJob, RemoteCheckpoint, RemoteEvent
from service.jobs.models import Job

if TYPE_CHECKING:
    from service.engines.upstream.engine import UpstreamEngine

Progress = Callable[[str, int, int], None]
TRAINING_PURPOSES = ("fine-tune", "fine-tune-results")
# Prompts held out of a job's training file when it had no validation file.
HELD_OUT_PROMPTS = 20
RECORD_MAX_TOKENS = 512


def _quiet(step: str, done: int, total: int) -> None:
    return None


@dataclass
class ExitReport:
    """What one run did, and what it could not do (each with its reason)."""

    files_imported: int = 0
    jobs_imported: int = 0
    models_recorded: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "files_imported": self.files_imported,
            "jobs_imported": self.jobs_imported,
            "models_recorded": self.models_recorded,
            "skipped": self.skipped,
        }


class ProviderExit:
    """Inventory, import and record for one provider, into one project."""

    def __init__(self, *, engine: UpstreamEngine, database: Database) -> None:
        self.engine = engine
        self.database = database
        self.settings = engine.settings
        self.client = engine.client
        self.name = engine.name

    # ------------------------------------------------------------ inventory

    async def inventory(self) -> dict[str, Any]:
        """The account's fine-tuning files, jobs and models, and what of them is here."""
        files, jobs = await self._account_files(), await self._account_jobs()
        async with self.database.session() as session:
            local_files = dict(
                (
                    await session.exec(
                        select(UpstreamFile.upstream_id, UpstreamFile.file_id).where(
                            UpstreamFile.provider == self.name
                        )
                    )
                ).all()
            )
            local_jobs = dict(
                (
                    await session.exec(
                        select(UpstreamJob.upstream_id, UpstreamJob.job_id).where(
                            UpstreamJob.provider == self.name
                        )
                    )
                ).all()
            )
            records = dict(
                (
                    await session.exec(
                        select(ModelRecord.model, ModelRecord.file_id).where(
                            ModelRecord.provider == self.name
                        )
                    )
                ).all()
            )
        models = sorted({j.fine_tuned_model for j in jobs if j.fine_tuned_model})
        return {
            "object": "provider.inventory",
            "provider": self.name,
            "files": [
                {
                    "id": f.id,
                    "filename": f.filename,
                    "purpose": f.purpose,
                    "bytes": f.bytes,
                    "created_at": f.created_at,
                    "imported_as": local_files.get(f.id),
                }
                for f in files
            ],
            "jobs": [
                {
                    "id": j.id,
                    "status": j.status,
                    "model": j.model,
                    "fine_tuned_model": j.fine_tuned_model,
                    "created_at": j.created_at,
                    "imported_as": local_jobs.get(j.id),
                }
                for j in jobs
            ],
            "models": [
                {"id": m, "shutdown_date": self._shutdown(m), "recorded_as": records.get(m)}
                for m in models
            ],
        }

    async def _account_files(self) -> list[Any]:
        """The account's training, validation and results files."""
        files = [f async for f in await self.client.files.list(limit=10_000)]
        return [f for f in files if f.purpose in TRAINING_PURPOSES]

    async def _account_jobs(self) -> list[Any]:
        """The account's fine-tuning jobs, newest first (every page)."""
        return [j async for j in await self.client.fine_tuning.jobs.list(limit=100)]

    def _shutdown(self, model: str) -> str | None:
        base = self.engine.base_spec(_base_of(model))
        return base.shutdown_date.isoformat() if base and base.shutdown_date else None

    # ------------------------------------------------------------ import

    async def import_all(
        self, *, project_id: str, progress: Progress = _quiet, report: ExitReport
    ) -> None:
        """Download the account's files, then record its jobs, into the project."""
        files = await self._account_files()
        for done, upstream_file in enumerate(files, 1):
            await self._import_file(project_id, upstream_file, report)
            progress("files", done, len(files))
        jobs = await self._account_jobs()
        for done, upstream_job in enumerate(reversed(jobs), 1):  # oldest first
            await self._import_job(project_id, upstream_job, report)
            progress("jobs", done, len(jobs))

    async def _mapped(self, upstream_id: str) -> str | None:
        return await local_copy(self.database, self.name, upstream_id)

    async def _import_file(self, project_id: str, upstream: Any, report: ExitReport) -> None:
        if await self._mapped(upstream.id) is not None:
            return
        self.settings.files_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.settings.files_dir, delete=False) as handle:
            path = Path(handle.name)
        try:
            async with self.client.files.with_streaming_response.content(upstream.id) as response:
                with path.open("wb") as out:
                    async for chunk in response.iter_bytes():
                        out.write(chunk)
            file_id = new_id("file-")
            mapping = UpstreamFile(
                provider=self.name, file_id=file_id, upstream_id=upstream.id, created_at=now()
            )
            async with self.database.session() as session:
                await create_fetched_file(
                    session=session,
                    project_id=project_id,
                    files_dir=self.settings.files_dir,
                    filename=upstream.filename,
                    purpose=upstream.purpose,
                    path=path,
                    file_id=file_id,
                    with_rows=[mapping],
                )
            report.files_imported += 1
        except APIError as refused:  # training data this service refuses, as an upload would
            report.skipped.append(f"file {upstream.id} ({upstream.filename}): {refused.message}")
        except IntegrityError:
            pass  # imported meanwhile by another run
        finally:
            path.unlink(missing_ok=True)

    async def _import_job(self, project_id: str, upstream: Any, report: ExitReport) -> None:
        async with self.database.session() as session:
            known = (
                await session.exec(
                    select(UpstreamJob.job_id).where(
                        UpstreamJob.provider == self.name, UpstreamJob.upstream_id == upstream.id
                    )
                )
            ).first()
        if known is not None:
            return
        events = [
            e async for e in await self.client.fine_tuning.jobs.list_events(upstream.id, limit=100)
        ]
        checkpoints = [
            c
            async for c in await self.client.fine_tuning.jobs.checkpoints.list(
                upstream.id, limit=100
            )
        ]
        training = await self._mapped(upstream.training_file) or upstream.training_file
        validation = None
        if upstream.validation_file:
            validation = await self._mapped(upstream.validation_file) or upstream.validation_file
        results = [r for r in [await self._mapped(f) for f in upstream.result_files or []] if r]
        method = upstream.method.to_dict() if upstream.method else {"type": "supervised"}
        if upstream.method is None and upstream.hyperparameters is not None:
            method["supervised"] = {"hyperparameters": upstream.hyperparameters.to_dict()}
        status = STATUSES.get(upstream.status, "failed")
        imported = ImportedJob(
            project_id=project_id,
            engine=self.name,
            organization_id=upstream.organization_id,
            created_at=upstream.created_at,
            model=upstream.model,
            base_model=_base_of(upstream.model),
            status=status,
            method=method,
            seed=upstream.seed,
            training_file=training,
            validation_file=validation,
            suffix=getattr(upstream, "user_provided_suffix", None),
            metadata=upstream.metadata,
            integrations=[i.to_dict() for i in upstream.integrations or []] or None,
            fine_tuned_model=upstream.fine_tuned_model,
            finished_at=upstream.finished_at,
            trained_tokens=upstream.trained_tokens,
            result_files=results,
            error=upstream.error.to_dict() if upstream.error and upstream.error.code else None,
            events=[
                RemoteEvent(
                    source_id=e.id,
                    created_at=e.created_at,
                    level=e.level,
                    message=e.message,
                    type=e.type or "message",
                    data=e.data if isinstance(e.data, dict) else None,
                )
                # The provider lists newest first: oldest first by time, its order within a second.
                for e in sorted(reversed(events), key=lambda e: e.created_at)
            ],
            checkpoints=[
                RemoteCheckpoint(
                    name=c.fine_tuned_model_checkpoint,
                    step_number=c.step_number,
                    metrics={k: v for k, v in c.metrics.to_dict().items() if k != "step"},
                    created_at=c.created_at,
                )
                for c in checkpoints
            ],
        )
        t = now()

        def link(job_id: str) -> Sequence[UpstreamJob]:
            # A job still live there goes on being mirrored here.
            live = upstream.status not in CLOSED
            return [
                UpstreamJob(
                    job_id=job_id,
                    provider=self.name,
                    upstream_id=upstream.id,
                    upstream_status=upstream.status,
                    next_sync_at=time.time() if live else None,
                    imported=True,
                    checkpoints_due=False,
                    created_at=t,
                    updated_at=t,
                )
            ]

        try:
            async with self.database.session() as session:
                await engine_calls.import_job(
                    session=session,
                    imported=imported,
                    location=self.name,
                    with_rows=link,
                    note=f"Imported from provider {self.name} (its job {upstream.id}); "
                    "read-only here.",
                )
        except IntegrityError:
            return  # imported meanwhile, or its model name is taken here
        report.jobs_imported += 1

    # ------------------------------------------------------------ record

    async def record_all(
        self,
        *,
        project_id: str,
        progress: Progress = _quiet,
        report: ExitReport,
        prompts_file: str | None = None,
    ) -> None:
        """Ask each imported fine-tuned model of the project for its answers, and keep them."""
        async with self.database.session() as session:
            rows = (
                await session.exec(
                    select(Job)
                    .join(UpstreamJob, col(UpstreamJob.job_id) == col(Job.id))
                    .where(
                        col(UpstreamJob.provider) == self.name,
                        col(Job.project_id) == project_id,
                        col(Job.status) == "succeeded",
                        col(Job.fine_tuned_model).is_not(None),
                    )
                    .order_by(col(Job.pk))
                )
            ).all()
            recorded = set(
                (
                    await session.exec(
                        select(ModelRecord.model).where(ModelRecord.provider == self.name)
                    )
                ).all()
            )
        todo = [job for job in rows if job.fine_tuned_model not in recorded]
        for done, job in enumerate(todo, 1):
            await self._record(job, report, prompts_file)
            progress("record", done, len(todo))

    async def _prompts(self, job: Job, prompts_file: str | None) -> list[list[dict[str, Any]]]:
        """Prompts for a model: a file given, the job's validation file, or a held-out sample
        of its training prompts, whichever is here first."""
        for file_id, sample in (
            (prompts_file, False),
            (job.validation_file, False),
            (job.training_file, True),
        ):
            if file_id is None or not await self._has_file(job.project_id, file_id):
                continue
            prompts = []
            with content_path(self.settings.files_dir, file_id).open("rb") as handle:
                for raw in handle:
                    if raw.strip() and (prompt := _prompt(json.loads(raw))):
                        prompts.append(prompt)
            if sample:
                random.Random(job.id).shuffle(prompts)
                prompts = prompts[:HELD_OUT_PROMPTS]
            return prompts
        return []

    async def _has_file(self, project_id: str, file_id: str) -> bool:
        async with self.database.session() as session:
            found = (
                await session.exec(
                    select(File.id).where(File.id == file_id, File.project_id == project_id)
                )
            ).first()
        return found is not None

    async def _record(self, job: Job, report: ExitReport, prompts_file: str | None) -> None:
        model = job.fine_tuned_model
        assert model is not None
        prompts = await self._prompts(job, prompts_file)
        if not prompts:
            report.skipped.append(f"model {model}: no prompts (its files were not imported)")
            return
        lines = []
        for prompt in prompts:
            try:
                answer = await self.client.chat.completions.create(
                    model=model,
                    messages=prompt,  # type: ignore[arg-type]
                    temperature=0,
                    max_tokens=RECORD_MAX_TOKENS,
                )
            except openai.NotFoundError:
                report.skipped.append(f"model {model}: the provider no longer serves it")
                return
            text = answer.choices[0].message.content or ""
            lines.append({"messages": [*prompt, {"role": "assistant", "content": text}]})
        content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        self.settings.files_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.settings.files_dir, delete=False) as handle:
            handle.write(content.encode())
            path = Path(handle.name)
        file_id = new_id("file-")
        row = ModelRecord(
            provider=self.name,
            model=model,
            job_id=job.id,
            file_id=file_id,
            prompts=len(lines),
            created_at=now(),
        )
        try:
            async with self.database.session() as session:
                await create_fetched_file(
                    session=session,
                    project_id=job.project_id,
                    files_dir=self.settings.files_dir,
                    filename=f"record-{model.replace(':', '_')}.jsonl",
                    purpose="fine-tune",
                    path=path,
                    file_id=file_id,
                    with_rows=[row],
                )
            report.models_recorded += 1
        except IntegrityError:
            pass  # recorded meanwhile by another run
        finally:
            path.unlink(missing_ok=True)


def _base_of(model: str) -> str:
    """The base model of a model name (`ft:<base>:...` stands on <base>)."""
    return model.split(":")[1] if model.startswith("ft:") else model


def _prompt(example: dict[str, Any]) -> list[dict[str, Any]]:
    """An example's prompt: its messages before its last assistant message."""
    messages = example.get("messages")
    if not isinstance(messages, list):
        return []
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    prompt = messages if last is None else messages[:last]
    return [{k: v for k, v in m.items() if k != "weight"} for m in prompt]


STEPS = ("import", "record")


@dataclass
class ExitRun:
    """One run of the exit, as `GET /v1/providers/{name}/exit` reports it."""

    provider: str
    project_id: str
    steps: list[str]
    status: str = "running"
    step: str | None = None
    done: int = 0
    total: int = 0
    report: ExitReport = field(default_factory=ExitReport)
    error: str | None = None
    started_at: int = field(default_factory=now)
    finished_at: int | None = None

    def progress(self, step: str, done: int, total: int) -> None:
        """Note where the run is."""
        self.step, self.done, self.total = step, done, total

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in the wire's shape."""
        return {
            "object": "provider.exit",
            "provider": self.provider,
            "project_id": self.project_id,
            "steps": self.steps,
            "status": self.status,
            "progress": {"step": self.step, "done": self.done, "total": self.total},
            "report": self.report.as_dict(),
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


async def run_exit(exit_: ProviderExit, run: ExitRun, *, prompts_file: str | None = None) -> None:
    """Run the steps of `run` in order; its status tells how it ended."""
    try:
        if "import" in run.steps:
            await exit_.import_all(
                project_id=run.project_id, progress=run.progress, report=run.report
            )
        if "record" in run.steps:
            await exit_.record_all(
                project_id=run.project_id,
                progress=run.progress,
                report=run.report,
                prompts_file=prompts_file,
            )
        run.status = "completed"
    except openai.OpenAIError as error:
        run.status = "failed"
        run.error = f"Provider {exit_.name}: {exit_.engine.redact(str(error))}; run it again."
    finally:
        run.finished_at = now()


class ExitRuns:
    """The exit runs this process started, the last one per provider (one at a time each)."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple[ExitRun, asyncio.Task[None]]] = {}

    def start(
        self, exit_: ProviderExit, *, project_id: str, steps: list[str], prompts_file: str | None
    ) -> ExitRun:
        """Start a run in the background; a 409 while another runs for the same provider."""
        current = self.latest(exit_.name)
        if current is not None and current.status == "running":
            raise Conflict(f"An exit from {exit_.name} is running already.", code="exit_running")
        run = ExitRun(provider=exit_.name, project_id=project_id, steps=steps)
        task = asyncio.create_task(run_exit(exit_, run, prompts_file=prompts_file))
        self._runs[exit_.name] = (run, task)
        return run

    def latest(self, provider: str) -> ExitRun | None:
        """The last run started for the provider, if any."""
        found = self._runs.get(provider)
        return found[0] if found else None

    def cancel(self) -> None:
        """Stop the runs under way (at shutdown); each continues when started again."""
        for _, task in self._runs.values():
            task.cancel()
