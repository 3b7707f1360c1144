"""Evaluations: a model answers prompts or a held-out file concurrently; each answer is checked,
scored and compared with another model's or a recorded answer, and the result is stored."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import anyio
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.engines.base import Engines
from service.errors import APIError, InvalidRequest, NotFound
from service.files.service import content_path, get_file
from service.ids import new_id, now
from service.inference import service as inference
from service.inference.schemas import ChatCompletionRequest
from service.jobs.models import Job
from service.models import aliases
from service.models.models import FineTunedModel
from service.pagination import page
from service.studio.models import Evaluation
from service.studio.redaction import PLACEHOLDER, Redactor
from service.studio.schemas import EvaluationCreate
from service.studio.scoring import (
    Item,
    check,
    items_from_file,
    judge_messages,
    outcome,
    rouge_l,
    summarize,
    verdict,
)
from service.studio.service import LazyRedactor

log = logging.getLogger(__name__)


def _items(body: EvaluationCreate) -> list[Item]:
    items = []
    for prompt in body.prompts or []:
        if isinstance(prompt, str):
            items.append(Item(messages=[{"role": "user", "content": prompt}]))
        else:
            system = [{"role": "system", "content": prompt.system}] if prompt.system else []
            items.append(
                Item(
                    messages=[*system, {"role": "user", "content": prompt.prompt}],
                    reference=prompt.reference,
                    language=prompt.language,
                )
            )
    return items


async def _file_items(
    *, session: AsyncSession, project_id: str, files_dir: Path, file_id: str, limit: int, param: str
) -> list[Item]:
    row = await get_file(session=session, project_id=project_id, file_id=file_id)
    if row.format != "chat":
        raise InvalidRequest(
            f"File {file_id} is not a chat-format file ({row.format or 'unknown format'}).",
            param=param,
            code="invalid_file_format",
        )
    path = content_path(files_dir, row.id)
    return await anyio.to_thread.run_sync(lambda: items_from_file(path, limit=limit))


async def _training_text(
    *, session: AsyncSession, project_id: str, files_dir: Path, model: str
) -> str:
    """Return the text of the training file the model was fine-tuned on, where it is here."""
    found = (
        await session.exec(
            select(Job.training_file)
            .join(FineTunedModel, col(FineTunedModel.job_id) == col(Job.id))
            .where(FineTunedModel.id == model, FineTunedModel.project_id == project_id)
        )
    ).first()
    if found is None:
        return ""
    path = content_path(files_dir, found)
    return await anyio.to_thread.run_sync(
        lambda: path.read_text(encoding="utf-8") if path.is_file() else ""
    )


async def _personal_values(redactor: Redactor, text: str) -> frozenset[str]:
    """Return the personal data a training file holds (none when it was redacted)."""
    if not text:
        return frozenset()

    def run() -> frozenset[str]:
        values = set()
        for line in text.splitlines()[:2_000]:
            for found in redactor.find(line):
                values.add(line[found.start : found.end])
        return frozenset(v for v in values if len(v) >= 4 and not PLACEHOLDER.fullmatch(v))

    return await anyio.to_thread.run_sync(run)


class _Runner:
    """Runs an evaluation's completions, at most `concurrency` at a time."""

    def __init__(
        self, *, database: Database, engines: Engines, project_id: str, body: EvaluationCreate
    ) -> None:
        self.database, self.engines, self.project_id, self.body = (
            database,
            engines,
            project_id,
            body,
        )
        self.limiter = anyio.Semaphore(body.concurrency)

    async def answer(self, model: str, messages: list[dict[str, str]]) -> tuple[str | None, float]:
        """Return a model's answer (None on failure) and the time it took in milliseconds."""
        request = ChatCompletionRequest.model_validate(
            {
                "model": model,
                "messages": messages,
                "max_tokens": self.body.max_tokens,
                "temperature": self.body.temperature,
                "top_p": self.body.top_p,
                "seed": self.body.seed,
            }
        )
        async with self.limiter:
            started = time.perf_counter()
            try:
                completion = await inference.complete(
                    database=self.database,
                    engines=self.engines,
                    project_id=self.project_id,
                    request=request,
                )
            except APIError as error:
                log.warning("evaluation: %s failed to answer: %s", model, error.message)
                return None, (time.perf_counter() - started) * 1000
            elapsed = (time.perf_counter() - started) * 1000
        text = completion["choices"][0]["message"].get("content") or ""
        return text, elapsed


async def create_evaluation(
    *,
    database: Database,
    engines: Engines,
    project_id: str,
    files_dir: Path,
    body: EvaluationCreate,
    redactor: LazyRedactor,
) -> Evaluation:
    """Answer every prompt with the model (and the comparison), score, judge, and store."""
    async with database.session() as session:
        # Every model named must be callable by the project before anything is stored.
        compare_model = body.compare_to.model if body.compare_to else None
        for name in (body.model, body.judge, compare_model):
            if name is not None:
                await inference.resolve_target(
                    session=session, engines=engines, project_id=project_id, name=name
                )
        items = (
            _items(body)
            if body.prompts is not None
            else await _file_items(
                session=session,
                project_id=project_id,
                files_dir=files_dir,
                file_id=str(body.file_id),
                limit=body.limit,
                param="file_id",
            )
        )
        if not items:
            raise InvalidRequest("No prompt to evaluate.", param="file_id", code="no_prompts")
        recorded: dict[str, str] = {}
        if body.compare_to is not None and body.compare_to.file_id is not None:
            for item in await _file_items(
                session=session,
                project_id=project_id,
                files_dir=files_dir,
                file_id=body.compare_to.file_id,
                limit=10_000,
                param="compare_to.file_id",
            ):
                if item.reference is not None:
                    recorded[item.key] = item.reference
        model_name = await aliases.resolve_alias(
            session=session, project_id=project_id, name=body.model
        )
        training = await _training_text(
            session=session, project_id=project_id, files_dir=files_dir, model=model_name
        )
        row = Evaluation(
            id=new_id("emaileval_"),
            project_id=project_id,
            status="running",
            model=body.model,
            request=body.model_dump(mode="json", exclude_none=True),
            created_at=now(),
        )
        session.add(row)
        await session.commit()
    personal = await _personal_values(await redactor.get(), training)
    runner = _Runner(database=database, engines=engines, project_id=project_id, body=body)
    try:
        results = await _evaluate(runner, items, body, recorded, personal)
        losses = await _losses(database, engines, project_id, body, items)
        summary = await anyio.to_thread.run_sync(lambda: summarize(results, losses))
        row.status, row.results, row.summary = "completed", results, summary
    except APIError as error:
        row.status, row.error = "failed", error.message
    except Exception:
        # Stored as failed rather than left running; the detail stays in the server's log.
        log.exception("evaluation %s failed", row.id)
        row.status, row.error = "failed", "The evaluation stopped on an internal error."
    row.finished_at = now()
    async with database.session() as session:
        session.add(row)
        await session.commit()
    return row


async def _evaluate(
    runner: _Runner,
    items: list[Item],
    body: EvaluationCreate,
    recorded: dict[str, str],
    personal: frozenset[str],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in items]
    compare_model = body.compare_to.model if body.compare_to else None

    async def one(index: int, item: Item) -> None:
        answer, latency = await runner.answer(body.model, item.messages)
        result: dict[str, Any] = {
            "prompt": item.request,
            "response": answer,
            # As the seed's testFineTunedModel counts it: the model answered (the checks judge
            # what it answered).
            "success": answer is not None,
            "latency_ms": round(latency, 1),
        }
        text = answer or ""
        result["checks"] = check(text, item, personal_values=personal).as_dict()
        result["rouge_l"] = round(rouge_l(text, item.reference), 4) if item.reference else None
        other: str | None = None
        if compare_model is not None:
            other, _ = await runner.answer(compare_model, item.messages)
        elif body.compare_to is not None:
            other = recorded.get(item.key)
        if other is not None:
            result["compare"] = {
                "response": other,
                "checks": check(other, item).as_dict(),
                "rouge_l": round(rouge_l(other, item.reference), 4) if item.reference else None,
            }
        if body.judge is not None and other is not None and answer:
            first, _ = await runner.answer(body.judge, judge_messages(item, answer, other))
            second, _ = await runner.answer(body.judge, judge_messages(item, other, answer))
            picks = (verdict(first or ""), verdict(second or ""))
            result["judgement"] = {"picks": list(picks), "outcome": outcome(*picks)}
        results[index] = result

    async with anyio.create_task_group() as group:
        for index, item in enumerate(items):
            group.start_soon(one, index, item)
    return results


async def _losses(
    database: Database,
    engines: Engines,
    project_id: str,
    body: EvaluationCreate,
    items: list[Item],
) -> dict[str, float | None]:
    """Return the held-out loss of the model (and of the compared model) on the references."""
    conversations = [
        [*item.messages, {"role": "assistant", "content": item.reference}]
        for item in items
        if item.reference
    ]
    losses: dict[str, float | None] = {}
    if not conversations:
        return losses
    names = {"model": body.model}
    if body.compare_to is not None and body.compare_to.model is not None:
        names["compare"] = body.compare_to.model
    for key, name in names.items():
        loss = await inference.heldout_loss(
            database=database,
            engines=engines,
            project_id=project_id,
            model=name,
            conversations=conversations,
        )
        losses[key] = None if loss is None or math.isnan(loss) else round(loss, 4)
    return losses


async def get_evaluation(
    *, session: AsyncSession, project_id: str, evaluation_id: str
) -> Evaluation:
    """Return the project's evaluation, or raise NotFound (also for other projects')."""
    row = (
        await session.exec(
            select(Evaluation).where(
                Evaluation.id == evaluation_id, Evaluation.project_id == project_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"No such evaluation: {evaluation_id}", param="evaluation_id")
    return row


async def list_evaluations(
    *, session: AsyncSession, project_id: str, after: str | None, limit: int
) -> tuple[list[Evaluation], bool]:
    """Return a page of the project's evaluations, newest first."""
    return await page(
        session,
        Evaluation,
        where=[col(Evaluation.project_id) == project_id],
        after=after,
        limit=limit,
        descending=True,
    )
