"""The local worker: claims queued local jobs and runs each in a trainer process.

The worker holds the job's lease and is the only one writing to the database: it relays the
trainer's messages (metrics, checkpoints, the outcome) to the jobs service, heartbeats, and
asks the trainer to stop when the job is paused or cancelled. One job at a time per worker.
`poll_once()` is one deterministic step; `run()` loops until told to stop.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from service.db import Database
from service.engines.local.messages import (
    CheckpointSaved,
    Failed,
    Started,
    StepLogged,
    Stopped,
    Succeeded,
    TrainerMessage,
)
from service.engines.local.trainer import TrainSpec, main
from service.errors import APIError
from service.files.service import content_path, create_file_from_bytes
from service.jobs import engine_calls
from service.jobs.models import Job
from service.models.service import find_derived
from service.settings import Settings

# How long the worker waits for the trainer's next message before checking that it lives and
# whether the service is stopping. Each check takes a core from the trainer for a moment.
OUTBOX_WAIT_SECONDS = 2.0

if TYPE_CHECKING:
    from service.engines.local.engine import LocalEngine

log = logging.getLogger(__name__)


@dataclass
class _Run:
    job: Job
    process: Any
    outbox: Any
    stop: Any
    reason: Any
    last_beat: float = 0.0
    outcome: str | None = None
    # Steps already logged by an earlier attempt (a resumed run repeats those after its
    # checkpoint): they are not logged twice.
    logged_step: int = 0
    started: float = field(default_factory=time.time)
    first_step: int | None = None

    def estimate(self, metrics: dict[str, Any]) -> int | None:
        """Unix time the job should finish, from this attempt's pace so far."""
        step, total = metrics["step"], metrics.get("total_steps")
        if self.first_step is None:
            self.first_step = step - 1
        done = step - self.first_step
        if not total or done <= 0:
            return None
        per_step = (time.time() - self.started) / done
        return int(time.time() + per_step * max(0, total - step))


class LocalWorker:
    """Claims local jobs from the database and trains them one at a time."""

    def __init__(self, *, database: Database, settings: Settings, engine: LocalEngine) -> None:
        self.database = database
        self.settings = settings
        self.engine = engine
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._context = multiprocessing.get_context("spawn")
        self._stopping = anyio.Event()

    async def run(self, stopping: anyio.Event) -> None:
        """Poll for jobs until `stopping` is set; a job in progress is handed back."""
        self._stopping = stopping
        while not stopping.is_set():
            try:
                worked = await self.poll_once()
            except Exception:  # a broken pass must not end the worker
                log.exception("local worker pass failed")
                worked = False
            if not worked:
                with anyio.move_on_after(self.settings.worker_poll_seconds):
                    await stopping.wait()

    async def poll_once(self) -> bool:
        """Claim one job and run it to its end; return whether there was one."""
        async with self.database.session() as session:
            job = await engine_calls.claim_next_job(
                session=session,
                engine=self.engine.name,
                worker_id=self.worker_id,
                lease_seconds=self.settings.worker_lease_seconds,
            )
        if job is None:
            return False
        try:
            await self._run(job)
        except engine_calls.LeaseLost:
            log.warning("lost the lease of %s; another worker may take it over", job.id)
        return True

    async def _spec(self, job: Job, logged_step: int) -> TrainSpec:
        folder = self.engine.folder(job.base_model)
        if folder is None:
            raise RuntimeError(f"base model {job.base_model} is not a local model here")
        adapter = None
        if job.model != job.base_model:
            async with self.database.session() as session:
                derived = await find_derived(session, job.model)
            adapter = derived.location if derived else None
        files_dir = self.settings.files_dir
        kind = job.method["type"]
        grader = (job.method.get("reinforcement") or {}).get("grader")
        grader_models = await self._grader_models(job, grader) if grader else {}
        return TrainSpec(
            job_id=job.id,
            method=kind,
            base_path=str(folder),
            training_path=str(content_path(files_dir, job.training_file)),
            validation_path=(
                str(content_path(files_dir, job.validation_file)) if job.validation_file else None
            ),
            output_dir=str(self.settings.jobs_dir / job.id),
            hyperparameters=dict((job.method.get(kind) or {}).get("hyperparameters") or {}),
            seed=job.seed,
            adapter_path=adapter,
            logged_step=logged_step,
            grader=grader,
            grader_models=grader_models,
            optimize=self.settings.training_optimizations == "auto",
        )

    async def _grader_models(
        self, job: Job, grader: dict[str, Any]
    ) -> dict[str, tuple[str, str | None]]:
        """Resolve the models of score_model graders, with the job's project's rights."""
        names: set[str] = set()

        def collect(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") == "score_model":
                    names.add(str(node["model"]))
                for value in node.values():
                    collect(value)
            elif isinstance(node, list):
                for value in node:
                    collect(value)

        collect(grader)
        found = {}
        async with self.database.session() as session:
            for name in names:
                found[name] = await self.engine.resolve_local(
                    session=session, project_id=job.project_id, name=name
                )
        return found

    async def _run(self, job: Job) -> None:
        async with self.database.session() as session:
            logged = await engine_calls.last_logged_step(session=session, job_id=job.id)
        try:
            spec = await self._spec(job, logged)
        except Exception as exc:
            await self._fail(job, "invalid_model", str(exc))
            return
        Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
        outbox = self._context.Queue()
        stop = self._context.Event()
        reason = self._context.Array("c", 16)
        process = self._context.Process(
            target=main, args=(spec, outbox, stop, reason, os.getpid()), daemon=True
        )
        process.start()
        run = _Run(
            job=job, process=process, outbox=outbox, stop=stop, reason=reason, logged_step=logged
        )
        try:
            while run.outcome is None:
                if self._stopping.is_set():
                    # Shutting down: hand the job back at once; the next worker resumes it
                    # from its last checkpoint.
                    process.kill()
                    async with self.database.session() as session:
                        await engine_calls.abandon_job(
                            session=session, job_id=job.id, worker_id=self.worker_id
                        )
                    return
                alive = process.is_alive()
                # Read after the liveness check: a trainer that exited right after its last
                # message has that message in the queue by now.
                message = await anyio.to_thread.run_sync(_next, outbox, OUTBOX_WAIT_SECONDS)
                if message is not None:
                    try:
                        await self._handle(run, message)
                    except APIError as refused:
                        # The job was cancelled or paused (or taken over) between two steps:
                        # what the trainer reports now is dropped, and it is asked to stop.
                        log.info("job %s no longer takes reports (%s)", job.id, refused.message)
                        self._ask_to_stop(run, "cancel")
                elif not alive:
                    await self._fail(
                        job,
                        "training_error",
                        f"The trainer process exited with code {process.exitcode}.",
                    )
                    run.outcome = "failed"
                await self._heartbeat(run)
        finally:
            if process.is_alive():
                process.join(timeout=30)
            if process.is_alive():
                process.kill()
            outbox.close()

    async def _heartbeat(self, run: _Run) -> None:
        interval = min(
            self.settings.worker_heartbeat_seconds, self.settings.worker_lease_seconds / 4
        )
        if time.monotonic() - run.last_beat < interval:
            return
        run.last_beat = time.monotonic()
        async with self.database.session() as session:
            try:
                status = await engine_calls.heartbeat(
                    session=session,
                    job_id=run.job.id,
                    worker_id=self.worker_id,
                    lease_seconds=self.settings.worker_lease_seconds,
                )
            except engine_calls.LeaseLost:
                status = "cancelled"  # cancelled jobs release their lease; stop either way
        if status in ("paused", "cancelled"):
            self._ask_to_stop(run, "pause" if status == "paused" else "cancel")

    @staticmethod
    def _ask_to_stop(run: _Run, reason: str) -> None:
        if not run.stop.is_set():
            run.reason.value = reason.encode()
            run.stop.set()

    async def _handle(self, run: _Run, message: TrainerMessage) -> None:
        job_id, worker = run.job.id, self.worker_id
        async with self.database.session() as session:
            match message:
                case Started(hyperparameters=hyperparameters, plan=plan):
                    await engine_calls.start_job(
                        session=session,
                        job_id=job_id,
                        worker_id=worker,
                        hyperparameters=hyperparameters,
                        setup=(plan["description"], plan) if plan else None,
                    )
                case StepLogged(metrics=metrics) if message.step > run.logged_step:
                    run.logged_step = message.step
                    await engine_calls.append_metrics(
                        session=session,
                        job_id=job_id,
                        worker_id=worker,
                        metrics=metrics,
                        estimated_finish=run.estimate(metrics),
                    )
                case StepLogged():
                    pass  # logged by an earlier attempt, before the checkpoint it resumed from
                case CheckpointSaved(step=step, metrics=metrics, path=path):
                    _, dropped = await engine_calls.add_checkpoint(
                        session=session,
                        job_id=job_id,
                        worker_id=worker,
                        organization=self.settings.organization,
                        step_number=step,
                        metrics=metrics,
                        location=path,
                    )
                    log.debug("checkpoints no longer kept: %s", dropped)
                case Stopped(reason=reason):
                    await engine_calls.release_job(session=session, job_id=job_id, worker_id=worker)
                    run.outcome = reason
                case Succeeded(adapter=adapter, trained_tokens=trained_tokens, csv=csv):
                    results = await create_file_from_bytes(
                        session=session,
                        project_id=run.job.project_id,
                        files_dir=self.settings.files_dir,
                        filename="step_metrics.csv",
                        purpose="fine-tune-results",
                        content=csv.encode(),
                    )
                    await engine_calls.succeed_job(
                        session=session,
                        job_id=job_id,
                        worker_id=worker,
                        organization=self.settings.organization,
                        trained_tokens=trained_tokens,
                        result_files=[results.id],
                        location=adapter,
                    )
                    run.outcome = "succeeded"
                case Failed(code=code, message=text):
                    await self._fail(run.job, code, text)
                    run.outcome = "failed"

    async def _fail(self, job: Job, code: str, message: str) -> None:
        async with self.database.session() as session:
            try:
                await engine_calls.fail_job(
                    session=session,
                    job_id=job.id,
                    worker_id=self.worker_id,
                    code=code,
                    message=message,
                )
            except APIError:
                log.warning("could not mark %s failed (%s): %s", job.id, code, message)


def _next(outbox: Any, timeout: float) -> TrainerMessage | None:
    try:
        message: TrainerMessage = outbox.get(timeout=timeout)
        return message
    except queue.Empty:
        return None
