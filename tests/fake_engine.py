"""The test engine, in one place: it offers OpenAI's bases and trains nothing; a test plays its
worker with `FakeRun`, through the same engine-side calls every real engine makes.

Its bases shut down on a date far away (OpenAI's real dates would make the suite change
behaviour the day they pass); tests of retirement give their own dates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.db import Database
from service.engines.base import ClientAction, Engine, Engines, ModelTarget
from service.ids import new_id, now
from service.inference.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from service.jobs import engine_calls
from service.jobs.models import Job, JobEvent
from service.models.registry import OPENAI_BASE_MODELS, BaseModelSpec

FAKE = "fake"
WORKER = "fake-worker"
ORGANIZATION = "personal"
SHUTDOWN = date(2099, 12, 31)
BASES: tuple[BaseModelSpec, ...] = tuple(
    dataclasses.replace(spec, shutdown_date=SHUTDOWN) for spec in OPENAI_BASE_MODELS
)


class FakeEngine(Engine):
    """Offers `models`; records client controls; answers completions by echoing the prompt."""

    def __init__(self, models: Sequence[BaseModelSpec] = BASES, *, name: str = FAKE) -> None:
        self.name = name
        self.models = list(models)
        self.controls: list[tuple[str, ClientAction]] = []
        self.deleted: list[str] = []

    def base_models(self) -> Sequence[BaseModelSpec]:
        return self.models

    async def control(self, job: Job, action: ClientAction) -> bool:
        self.controls.append((job.id, action))
        return False

    @staticmethod
    def answer(request: ChatCompletionRequest) -> str:
        """What the fake model says: the last message, echoed."""
        return f"echo: {request.messages[-1].content}"

    async def complete(self, target: ModelTarget, request: ChatCompletionRequest) -> dict[str, Any]:
        text = self.answer(request)
        completion = ChatCompletion(
            id=new_id("chatcmpl-"),
            created=now(),
            model=target.name,
            choices=[Choice(index=0, message=AssistantMessage(content=text), finish_reason="stop")],
            usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        )
        return completion.model_dump(mode="json")

    async def complete_stream(
        self, target: ModelTarget, request: ChatCompletionRequest
    ) -> AsyncGenerator[dict[str, Any]]:
        header = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": now()}
        for delta, finish in (({"content": self.answer(request)}, None), ({}, "stop")):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            yield {**header, "model": target.name, "choices": [choice]}

    async def delete_model(self, target: ModelTarget) -> None:
        self.deleted.append(target.name)


def fake_engines(*extra: Engine) -> Engines:
    """A deployment's engines for tests: the fake one, and any others given."""
    return Engines([FakeEngine(), *extra])


@dataclass
class FakeRun:
    """Plays a worker on one job: each call is one engine-side call, in its own session."""

    database: Database
    job_id: str
    engine: str = FAKE
    worker: str = WORKER
    lease_seconds: float = 600
    claimed: bool = False
    step: int = 0
    checkpoints: list[str] = field(default_factory=list)

    async def claim(self) -> None:
        """Claim the engine's next queued job, which must be this one."""
        async with self.database.session() as session:
            job = await engine_calls.claim_next_job(
                session=session,
                engine=self.engine,
                worker_id=self.worker,
                lease_seconds=self.lease_seconds,
            )
        assert job is not None, f"no queued {self.engine} job to claim"
        assert job.id == self.job_id, f"claimed {job.id}, expected {self.job_id}"
        self.claimed = True

    async def start(self, hyperparameters: Mapping[str, Any] | None = None) -> None:
        """Mark the job running with these resolved hyperparameters (claiming it first)."""
        if not self.claimed:
            await self.claim()
        async with self.database.session() as session:
            await engine_calls.start_job(
                session=session,
                job_id=self.job_id,
                worker_id=self.worker,
                hyperparameters=dict(hyperparameters or {}),
            )

    async def log(self, step: int, **metrics: Any) -> JobEvent:
        """Log one step's metrics (training loss 1/step unless given) in one commit."""
        self.step = step
        data = {"step": step, "train_loss": 1.0 / step, **metrics}
        async with self.database.session() as session:
            return await engine_calls.append_metrics(
                session=session, job_id=self.job_id, worker_id=self.worker, metrics=data
            )

    async def metrics(self, count: int = 1, **metrics: Any) -> str:
        """Log `count` more steps, one commit each; return the last event's id."""
        event_id = ""
        for _ in range(count):
            event_id = (await self.log(self.step + 1, **metrics)).id
        return event_id

    async def checkpoint(self, metrics: Mapping[str, Any] | None = None) -> str:
        """Save a checkpoint at the current step; return its model name."""
        async with self.database.session() as session:
            checkpoint, _ = await engine_calls.add_checkpoint(
                session=session,
                job_id=self.job_id,
                worker_id=self.worker,
                organization=ORGANIZATION,
                step_number=self.step,
                metrics=dict(metrics or {"train_loss": 1.0 / max(self.step, 1)}),
            )
        self.checkpoints.append(checkpoint.fine_tuned_model_checkpoint)
        return checkpoint.fine_tuned_model_checkpoint

    async def succeed(
        self, *, trained_tokens: int = 1234, result_files: list[str] | None = None
    ) -> str:
        """End the job succeeded; return its fine-tuned model's name."""
        async with self.database.session() as session:
            job = await engine_calls.succeed_job(
                session=session,
                job_id=self.job_id,
                worker_id=self.worker,
                organization=ORGANIZATION,
                trained_tokens=trained_tokens,
                result_files=result_files or [],
            )
        assert job.fine_tuned_model is not None
        return job.fine_tuned_model

    async def fail(self, code: str = "x", message: str = "no") -> None:
        """End the job failed (its final event)."""
        async with self.database.session() as session:
            await engine_calls.fail_job(
                session=session,
                job_id=self.job_id,
                worker_id=self.worker,
                code=code,
                message=message,
            )

    async def release(self) -> None:
        """Give the job back after a clean stop."""
        async with self.database.session() as session:
            await engine_calls.release_job(
                session=session, job_id=self.job_id, worker_id=self.worker
            )


async def claim_next(database: Database, *, engine: str = FAKE) -> FakeRun:
    """Claim the engine's next queued job, whichever it is."""
    async with database.session() as session:
        job = await engine_calls.claim_next_job(
            session=session, engine=engine, worker_id=WORKER, lease_seconds=600
        )
    assert job is not None, f"no queued {engine} job to claim"
    return FakeRun(database, job.id, engine=engine, claimed=True)


async def run_to_success(
    database: Database, *, engine: str = FAKE, steps: int = 3
) -> tuple[str, list[str]]:
    """Claim the next job and train it: a step and a checkpoint each time, then success.

    Returns the fine-tuned model name and the checkpoint names.
    """
    run = await claim_next(database, engine=engine)
    await run.start({"n_epochs": steps, "batch_size": 1, "learning_rate_multiplier": 1.0})
    for _ in range(steps):
        await run.metrics(total_steps=steps)
        await run.checkpoint()
    return await run.succeed(), run.checkpoints
