"""Poller step of one provider: start its queued jobs there, and mirror each live job here.

A pass over a job takes the job's lease (one replica at a time, kept alive while the pass runs),
creates the job upstream if it is not yet there (each file uploaded once per provider; a create
repeated after a crash finds the first one by its metadata), then reads the job, its new events
and, when one was announced, its checkpoints, and mirrors them here in one transaction through
`engine_calls` (an event or checkpoint seen twice is stored once). The next pass comes by status:
soon while running, later while queued or paused, never once final on both sides; a webhook
brings it forward. An unreachable provider leaves the job as it is, with one `warn` event, and
the pass is retried with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import openai
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.engines.upstream.models import UpstreamFile, UpstreamJob
from service.engines.upstream.provider import (
    JOB_ID_METADATA_KEY,
    MAX_METADATA_PAIRS,
    describe,
    is_transient,
    today,
)
from service.files.service import content_path, create_file_from_bytes
from service.ids import new_id, now
from service.jobs import engine_calls, states
from service.jobs.engine_calls import RemoteCheckpoint, RemoteEvent, RemoteState
from service.jobs.models import Job, JobEvent

if TYPE_CHECKING:
    from service.engines.upstream.engine import UpstreamEngine

log = logging.getLogger(__name__)

# The provider's statuses, in ours (a job validating there is queued here).
STATUSES = {
    "validating_files": "queued",
    "queued": "queued",
    "running": "running",
    "paused": "paused",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
CLOSED = frozenset({"succeeded", "failed", "cancelled"})
# Due jobs are looked for at most this often (a webhook or a new job does not wait for it).
SCAN_SECONDS = 1.0
SCAN_LIMIT = 200
EVENTS_PAGE = 100
PASSES_AT_ONCE = 8
MAX_BACKOFF_SECONDS = 300.0
RETIREMENT_NOTICE_DAYS = 30


class UpstreamSync:
    """Starts and mirrors the jobs of one provider; `poll_once` starts the passes that are due."""

    def __init__(self, *, engine: UpstreamEngine, database: Database) -> None:
        self.engine = engine
        self.database = database
        self.settings = engine.settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._passes: dict[str, asyncio.Task[None]] = {}
        self._scanned_at = -SCAN_SECONDS
        self._limit = asyncio.Semaphore(PASSES_AT_ONCE)
        self._uploads: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------ scheduling

    async def poll_once(self) -> int:
        """Start a pass (in the background) for each job that is due; return how many."""
        if time.monotonic() - self._scanned_at < SCAN_SECONDS:
            return 0
        self._scanned_at = time.monotonic()
        started = 0
        for job_id in await self._due():
            started += self.start(job_id)
        return started

    def start(self, job_id: str) -> bool:
        """Start a pass over the job now, unless one is under way in this process."""
        if job_id in self._passes:
            return False
        task = asyncio.create_task(self._guarded(job_id))
        self._passes[job_id] = task
        task.add_done_callback(lambda _: self._passes.pop(job_id, None))
        return True

    def scan_soon(self) -> None:
        """Look for due jobs at the next poll (a job was created, a webhook came)."""
        self._scanned_at = -SCAN_SECONDS

    async def drain(self) -> None:
        """Wait for the passes under way (and those they start) to end."""
        while self._passes:
            await asyncio.gather(*list(self._passes.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop the passes under way; their leases expire and another replica continues."""
        for task in list(self._passes.values()):
            task.cancel()
        await asyncio.gather(*list(self._passes.values()), return_exceptions=True)

    async def _due(self) -> list[str]:
        t = time.time()
        async with self.database.session() as session:
            unlinked = (
                select(Job.id)
                .outerjoin(UpstreamJob, col(UpstreamJob.job_id) == col(Job.id))
                .where(
                    col(Job.engine) == self.engine.name,
                    col(Job.status).in_(sorted(states.LIVE)),
                    col(UpstreamJob.pk).is_(None),
                )
                .limit(SCAN_LIMIT)
            )
            due = (
                select(UpstreamJob.job_id)
                .where(
                    col(UpstreamJob.provider) == self.engine.name,
                    col(UpstreamJob.next_sync_at) <= t,
                )
                .order_by(col(UpstreamJob.next_sync_at))
                .limit(SCAN_LIMIT)
            )
            return [*(await session.exec(unlinked)).all(), *(await session.exec(due)).all()]

    # ------------------------------------------------------------ one pass

    async def _guarded(self, job_id: str) -> None:
        try:
            async with self._limit:
                await self.sync_job(job_id)
        except Exception:
            log.exception("sync of %s with %s failed", job_id, self.engine.name)

    async def sync_job(self, job_id: str) -> None:
        """Run one pass over the job, if no other replica holds it."""
        lease = self.settings.upstream_lease_seconds
        async with self.database.session() as session:
            if not await engine_calls.acquire_job(
                session=session, job_id=job_id, worker_id=self.worker_id, lease_seconds=lease
            ):
                return
        keeper = asyncio.create_task(self._keep_lease(job_id, lease))
        try:
            await self._pass(job_id)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            async with self.database.session() as session:
                await engine_calls.release_lease(
                    session=session, job_id=job_id, worker_id=self.worker_id
                )

    async def _keep_lease(self, job_id: str, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            async with self.database.session() as session:
                await engine_calls.acquire_job(
                    session=session, job_id=job_id, worker_id=self.worker_id, lease_seconds=lease
                )

    async def _pass(self, job_id: str) -> None:
        link = await self._link(job_id)
        job = await self._job(job_id)
        if link.upstream_id is None:
            if states.is_terminal(job.status):  # cancelled before it ever left
                await self._update(link, next_sync_at=None)
                return
            if job.status == "paused":
                await self._schedule(link, "paused")
                return
        try:
            if link.upstream_id is None:
                upstream_id = await self._create(job)
                if upstream_id is None:
                    await self._update(link, next_sync_at=None)
                    return
                link = await self._update(link, upstream_id=upstream_id)
            await self._mirror(job, link)
        except openai.NotFoundError as error:
            if link.upstream_id is None:
                raise
            if not states.is_terminal((await self._job(job_id)).status):
                text = describe(error, self.engine.redact)
                await self._fail(job, "upstream_job_not_found", text)
            await self._update(link, next_sync_at=None)
        except Exception as error:
            if not is_transient(error) and not isinstance(error, openai.APIStatusError):
                raise
            await self._outage(job, link, error)

    # ------------------------------------------------------------ creating the job upstream

    async def _create(self, job: Job) -> str | None:
        """Create the job at the provider (or find the one a crashed pass created); None when
        the provider refused it, which fails the job here."""
        client = self.engine.client
        found = await client.fine_tuning.jobs.list(metadata={JOB_ID_METADATA_KEY: job.id}, limit=1)
        if found.data:
            return str(found.data[0].id)
        training = await self._upload(job, job.training_file)
        validation = await self._upload(job, job.validation_file) if job.validation_file else None
        metadata = dict(job.metadata_ or {})
        if len(metadata) < MAX_METADATA_PAIRS:
            metadata[JOB_ID_METADATA_KEY] = job.id
        params: dict[str, Any] = {
            "model": job.model,
            "training_file": training,
            "method": job.method,
            "seed": job.seed,
            "metadata": metadata,
        }
        optional = {
            "validation_file": validation,
            "suffix": job.suffix,
            "integrations": job.integrations,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        try:
            # No retry inside the SDK: a create whose answer was lost is found by its metadata
            # at the next pass, instead of being made twice.
            created = await client.with_options(max_retries=0).fine_tuning.jobs.create(
                **params, extra_headers={"Idempotency-Key": f"ft-create-{job.id}"}
            )
        except openai.APIStatusError as error:
            if is_transient(error):
                raise
            body = error.body if isinstance(error.body, dict) else {}
            code = body.get("code") if isinstance(body.get("code"), str) else None
            await self._fail(
                job,
                code or "upstream_rejected",
                f"Provider {self.engine.name} refused the job: "
                + describe(error, self.engine.redact),
                param=body.get("param") if isinstance(body.get("param"), str) else None,
            )
            return None
        return str(created.id)

    async def _upload(self, job: Job, file_id: str) -> str:
        """Return the provider's id of one of our files, uploading it the first time."""
        # Jobs that share a file wait for one upload of it (in this process; two replicas
        # racing would leave the provider one spare copy, unused).
        lock = self._uploads.setdefault(file_id, asyncio.Lock())
        async with lock:
            return await self._upload_once(file_id)

    async def _upload_once(self, file_id: str) -> str:
        async with self.database.session() as session:
            known = (
                await session.exec(
                    select(UpstreamFile.upstream_id).where(
                        UpstreamFile.provider == self.engine.name, UpstreamFile.file_id == file_id
                    )
                )
            ).first()
        if known is not None:
            return known
        client = self.engine.client
        name = f"{file_id}.jsonl"
        # An upload whose record a crash lost is there already, under our file's id.
        listed = await client.files.list(purpose="fine-tune", limit=10_000)
        upstream_id = next((str(f.id) for f in listed.data if f.filename == name), None)
        if upstream_id is None:
            path = content_path(self.settings.files_dir, file_id)
            with path.open("rb") as content:
                # No retry inside the SDK: an upload whose answer was lost is found by its
                # name at the next pass.
                uploaded = await client.with_options(max_retries=0).files.create(
                    file=(name, content, "application/jsonl"), purpose="fine-tune"
                )
            upstream_id = str(uploaded.id)
        async with self.database.session() as session:
            session.add(
                UpstreamFile(
                    provider=self.engine.name,
                    file_id=file_id,
                    upstream_id=upstream_id,
                    created_at=now(),
                )
            )
            with contextlib.suppress(IntegrityError):  # another replica recorded it first
                await session.commit()
        return upstream_id

    # ------------------------------------------------------------ mirroring it here

    async def _mirror(self, job: Job, link: UpstreamJob) -> None:
        client = self.engine.client
        remote_id = link.upstream_id
        assert remote_id is not None
        upstream = await client.fine_tuning.jobs.retrieve(remote_id)
        upstream = await self._carry_control(job, upstream)
        if link.warned:  # told before anything else: a final status below frees the lease
            await self._note(
                job, f"Provider {self.engine.name} answers again; the job is synced.", level="info"
            )
            link = await self._update(link, warned=False)
        events = await self._new_events(job.id, remote_id)
        status = STATUSES.get(upstream.status, job.status)
        final = states.is_terminal(status)
        announced = any(e.message.startswith("Checkpoint created") for e in events)
        checkpoints = None
        if link.checkpoints_due or announced or final:
            checkpoints = await self._checkpoints(remote_id)
        results: list[str] = []
        if status == "succeeded":
            results = [await self._result_file(job, f) for f in upstream.result_files or []]
        error = upstream.error.to_dict() if upstream.error and upstream.error.code else None
        state = RemoteState(
            status=status,
            events=events,
            checkpoints=checkpoints,
            hyperparameters=_hyperparameters(upstream),
            fine_tuned_model=upstream.fine_tuned_model,
            trained_tokens=upstream.trained_tokens,
            result_files=results,
            error=error,
            estimated_finish=upstream.estimated_finish or None,
        )
        async with self.database.session() as session:
            mirrored = await engine_calls.mirror_job(
                session=session,
                job_id=job.id,
                worker_id=self.worker_id,
                state=state,
                location=self.engine.name,
            )
        if status == "running" and not link.retirement_warned:
            await self._retirement_notice(job, link)
        done = final and states.is_terminal(mirrored.status)
        await self._update(
            link,
            upstream_status=upstream.status,
            failures=0,
            warned=False,
            last_error=None,
            checkpoints_due=checkpoints is None and link.checkpoints_due,
            next_sync_at=None if done else self._next(upstream.status),
        )

    async def _carry_control(self, job: Job, upstream: Any) -> Any:
        """Carry to the provider a cancel or pause that a client made here while the job was
        being created there (the control found no provider id yet); return the job there."""
        current = (await self._job(job.id)).status
        jobs = self.engine.client.fine_tuning.jobs
        if current == "cancelled" and upstream.status not in CLOSED:
            return await jobs.cancel(upstream.id)
        if current == "paused" and upstream.status in ("validating_files", "queued", "running"):
            with contextlib.suppress(openai.BadRequestError):  # not pausable yet: next pass
                return await jobs.pause(upstream.id)
        return upstream

    async def _new_events(self, job_id: str, upstream_id: str) -> list[RemoteEvent]:
        """Read the provider's log, newest first, down to a page holding an event we have."""
        client = self.engine.client
        seen: dict[str, tuple[int, Any]] = {}
        after: str | None = None
        while True:
            page = await client.fine_tuning.jobs.list_events(
                upstream_id, limit=EVENTS_PAGE, after=after if after else openai.omit
            )
            ids = [e.id for e in page.data]
            async with self.database.session() as session:
                known = set(
                    (
                        await session.exec(
                            select(JobEvent.source_id).where(
                                JobEvent.job_id == job_id, col(JobEvent.source_id).in_(ids)
                            )
                        )
                    ).all()
                )
            for event in page.data:
                if event.id not in known and event.id not in seen:
                    seen[event.id] = (len(seen), event)
            if known or not page.has_more or not page.data:
                break
            after = page.data[-1].id
        # Oldest first: by time, and within a second in the provider's (newest-first) order.
        ordered = sorted(seen.values(), key=lambda p: (p[1].created_at, -p[0]))
        return [
            RemoteEvent(
                source_id=event.id,
                created_at=event.created_at,
                level=event.level if event.level in ("info", "warn", "error") else "info",
                message=event.message,
                type=event.type or "message",
                data=event.data if isinstance(event.data, dict) else None,
            )
            for _, event in ordered
        ]

    async def _checkpoints(self, upstream_id: str) -> list[RemoteCheckpoint]:
        checkpoints = []
        page = await self.engine.client.fine_tuning.jobs.checkpoints.list(upstream_id, limit=100)
        async for checkpoint in page:
            metrics = checkpoint.metrics.to_dict() if checkpoint.metrics else {}
            checkpoints.append(
                RemoteCheckpoint(
                    name=checkpoint.fine_tuned_model_checkpoint,
                    step_number=checkpoint.step_number,
                    metrics={k: v for k, v in metrics.items() if k != "step"},
                    created_at=checkpoint.created_at,
                )
            )
        return checkpoints

    async def _result_file(self, job: Job, upstream_id: str) -> str:
        """Return our copy of a results file of the provider, fetched the first time."""
        name = self.engine.name
        known = await local_copy(self.database, self.engine.name, upstream_id)
        if known is not None:
            return known
        meta = await self.engine.client.files.retrieve(upstream_id)
        content = await self.engine.client.files.content(upstream_id)
        file_id = new_id("file-")
        mapping = UpstreamFile(
            provider=name, file_id=file_id, upstream_id=upstream_id, created_at=now()
        )
        async with self.database.session() as session:
            try:
                # The mapping commits with the file: fetched once, even across a crash.
                await create_file_from_bytes(
                    session=session,
                    project_id=job.project_id,
                    files_dir=self.settings.files_dir,
                    filename=meta.filename,
                    purpose="fine-tune-results",
                    content=content.content,
                    file_id=file_id,
                    with_rows=[mapping],
                )
            except IntegrityError:  # another replica fetched it first
                known = await local_copy(self.database, self.engine.name, upstream_id)
                if known is None:
                    raise
                return known
        return file_id

    # ------------------------------------------------------------ bookkeeping

    def _next(self, upstream_status: str) -> float:
        interval: float = {
            "running": self.settings.upstream_sync_running_seconds,
            "paused": self.settings.upstream_sync_paused_seconds,
        }.get(upstream_status, self.settings.upstream_sync_queued_seconds)
        return time.time() + interval

    async def _schedule(self, link: UpstreamJob, status: str) -> None:
        await self._update(link, next_sync_at=self._next(status))

    async def _outage(self, job: Job, link: UpstreamJob, error: Exception) -> None:
        text = describe(error, self.engine.redact)
        log.warning("provider %s, job %s: %s", self.engine.name, job.id, text)
        if not link.warned:
            current = (await self._job(job.id)).status
            await self._note(
                job,
                f"Provider {self.engine.name} did not answer ({text}); the job stays {current} "
                "here and is synced again when the provider answers.",
            )
        failures = link.failures + 1
        delay = min(MAX_BACKOFF_SECONDS, self.settings.upstream_sync_running_seconds * failures)
        await self._update(
            link,
            failures=failures,
            warned=True,
            last_error=text[:1000],
            next_sync_at=time.time() + delay,
        )

    async def _retirement_notice(self, job: Job, link: UpstreamJob) -> None:
        base = self.engine.base_spec(job.base_model)
        shutdown = base.shutdown_date if base else None
        if shutdown is None or (shutdown - today()).days > RETIREMENT_NOTICE_DAYS:
            return
        await self._note(
            job,
            f"The base model {job.base_model} shuts down on {shutdown.isoformat()}, and every "
            "model fine-tuned from it with it: keep a record of what this job's model writes "
            "and re-train it on an open-weight model.",
        )
        await self._update(link, retirement_warned=True)

    async def _note(self, job: Job, message: str, *, level: str = "warn") -> None:
        async with self.database.session() as session:
            await engine_calls.note(
                session=session,
                job_id=job.id,
                worker_id=self.worker_id,
                message=message,
                level=level,
            )

    async def _fail(self, job: Job, code: str, message: str, param: str | None = None) -> None:
        async with self.database.session() as session:
            await engine_calls.fail_job(
                session=session,
                job_id=job.id,
                worker_id=self.worker_id,
                code=code,
                message=message,
                param=param,
            )

    async def _job(self, job_id: str) -> Job:
        async with self.database.session() as session:
            return (await session.exec(select(Job).where(Job.id == job_id))).one()

    async def _link(self, job_id: str) -> UpstreamJob:
        async with self.database.session() as session:
            link = await _find_link(session, job_id)
            if link is not None:
                return link
            t = now()
            session.add(
                UpstreamJob(
                    job_id=job_id,
                    provider=self.engine.name,
                    next_sync_at=time.time(),
                    created_at=t,
                    updated_at=t,
                )
            )
            with contextlib.suppress(IntegrityError):
                await session.commit()
            await session.rollback()
            link = await _find_link(session, job_id)
            assert link is not None
            return link

    async def _update(self, link: UpstreamJob, **values: Any) -> UpstreamJob:
        async with self.database.session() as session:
            await session.exec(
                update(UpstreamJob)
                .where(col(UpstreamJob.pk) == link.pk)
                .values(updated_at=now(), **values)
            )
            await session.commit()
            found = await _find_link(session, link.job_id)
            assert found is not None
            return found


async def local_copy(database: Database, provider: str, upstream_id: str) -> str | None:
    """Return our id of a provider's file already fetched here (a results or imported file)."""
    async with database.session() as session:
        return (
            await session.exec(
                select(UpstreamFile.file_id).where(
                    UpstreamFile.provider == provider, UpstreamFile.upstream_id == upstream_id
                )
            )
        ).first()


async def _find_link(session: AsyncSession, job_id: str) -> UpstreamJob | None:
    query = select(UpstreamJob).where(UpstreamJob.job_id == job_id)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


def _hyperparameters(upstream: Any) -> dict[str, Any] | None:
    """The provider's resolved hyperparameters of the job's method."""
    method = upstream.method
    if method is not None and method.type:
        config = getattr(method, method.type, None)
        hyper = getattr(config, "hyperparameters", None)
        if hyper is not None:
            return {k: v for k, v in hyper.to_dict().items() if v is not None}
    if upstream.hyperparameters is not None:
        return {k: v for k, v in upstream.hyperparameters.to_dict().items() if v is not None}
    return None
