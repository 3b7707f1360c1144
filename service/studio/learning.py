"""The studio's training loop: department and personal models, feedback, and the runs that turn
feedback into a DPO job whose model is promoted only when its evaluation passes.

A run (`Retraining`) moves starting -> preparing -> training -> evaluating -> promoted |
rejected | failed (an initial run: training -> promoted | kept | failed). `Watcher.poll_once`
moves every run one step; `serve` runs it in the background, woken when feedback starts a run,
and tests call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.engines.base import Engines
from service.errors import APIError, Conflict, InvalidRequest, NotFound
from service.files.service import content_path
from service.ids import new_id, now
from service.jobs import service as jobs
from service.jobs.models import Job
from service.jobs.schemas import JobCreate
from service.models import aliases
from service.models.models import AliasCompletion
from service.settings import Settings
from service.studio import cleaning, prompts
from service.studio.datasets import MIN_EXAMPLES, EmailRecord, PreferencePair
from service.studio.evaluations import create_evaluation
from service.studio.models import Feedback, Retraining, StudioEmail
from service.studio.schemas import (
    CompareTo,
    DatasetCreate,
    EvaluationCreate,
    FeedbackCreate,
    FeedbackStatus,
    PreferencesCreate,
    PromptItem,
    RunObject,
    ScopeModelsCreate,
)
from service.studio.service import (
    LazyRedactor,
    create_dataset,
    create_preferences,
    get_dataset,
    get_settings,
    remember_emails,
)

log = logging.getLogger(__name__)

# The seed's ContinuousLearner: retrain after 50 feedbacks, with at least 10 rewrites.
DEFAULT_THRESHOLD = 50
MIN_REWRITES = 10
# The seed's triggerRetraining hyperparameters.
FEEDBACK_DPO = {"n_epochs": 1, "learning_rate_multiplier": 0.05}
ACTIVE = ("starting", "preparing", "training", "evaluating")
# A run that has been preparing its job this long was interrupted: it starts again.
STALE_PREPARING_SECONDS = 600
# An evaluation that has not finished after this long was interrupted.
STALE_EVALUATION_SECONDS = 3600
# Prompts a retraining's evaluation answers (each model answers each, greedily).
HELD_OUT = 20


@dataclass(frozen=True)
class Started:
    """A scope's dataset and the job training its model (or why there is none)."""

    scope: str
    dataset_id: str | None
    job: Job | None
    run_id: str | None
    skipped: str | None = None


# --- department and personal models ------------------------------------------------------------


async def _start_scope(
    *,
    session: AsyncSession,
    project_id: str,
    settings: Settings,
    engines: Engines,
    redactor: LazyRedactor,
    body: ScopeModelsCreate,
    scope: str,
    department: str | None,
    user_id: str | None,
    suffix: str,
) -> Started:
    """Build one scope's dataset and start its job; too little data is a skip, not a failure."""
    try:
        dataset = await create_dataset(
            session=session,
            project_id=project_id,
            files_dir=settings.files_dir,
            body=DatasetCreate(
                emails=body.emails,
                file_id=body.file_id,
                min_rating=body.min_rating,
                redact=body.redact,
                validation_fraction=body.validation_fraction,
                department=department,
                user_id=user_id,
            ),
            redactor=redactor,
            registry=engines.registry,
            remember=False,
        )
    except InvalidRequest as error:
        if error.code in {"empty_dataset", "too_few_examples"}:
            return Started(
                scope=scope, dataset_id=None, job=None, run_id=None, skipped=error.message
            )
        raise
    job = await jobs.create_job(
        session=session,
        project_id=project_id,
        body=JobCreate.model_validate(
            {
                "model": body.model,
                "training_file": dataset.training_file,
                "validation_file": dataset.validation_file,
                "suffix": suffix[:64],
                "metadata": {"studio_scope": scope, "studio_dataset": dataset.id},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": body.hyperparameters or {}},
                },
            }
        ),
        engines=engines,
        settings=settings,
    )
    run = Retraining(
        id=new_id("emailrun_"),
        project_id=project_id,
        scope=scope,
        kind="initial",
        status="training",
        base_model=job.model,
        job_id=job.id,
        dataset_id=dataset.id,
        n_feedback=0,
        n_pairs=0,
        created_at=now(),
        updated_at=now(),
    )
    session.add(run)
    await session.commit()
    return Started(scope=scope, dataset_id=dataset.id, job=job, run_id=run.id)


async def train_departments(
    *,
    session: AsyncSession,
    project_id: str,
    settings: Settings,
    engines: Engines,
    redactor: LazyRedactor,
    body: ScopeModelsCreate,
) -> list[Started]:
    """One dataset and one job per department (the seed's trainDepartmentModel)."""
    records = await _history(session=session, project_id=project_id, body=body, settings=settings)
    found = sorted({r.department for r in records if r.department})
    departments = body.departments or found
    started = []
    for department in departments:
        started.append(
            await _start_scope(
                session=session,
                project_id=project_id,
                settings=settings,
                engines=engines,
                redactor=redactor,
                body=body.model_copy(update={"emails": records, "file_id": None}),
                scope=f"department:{department}",
                department=department,
                user_id=None,
                suffix=body.suffix or f"{department}-emails",
            )
        )
    return started


async def train_personal(
    *,
    session: AsyncSession,
    project_id: str,
    settings: Settings,
    engines: Engines,
    redactor: LazyRedactor,
    body: ScopeModelsCreate,
) -> Started:
    """A user's model from their own rated mails (the seed's trainPersonalizedModel)."""
    if not body.user_id:
        raise InvalidRequest("A personal model needs 'user_id'.", param="user_id")
    records = await _history(session=session, project_id=project_id, body=body, settings=settings)
    usable = [
        r
        for r in records
        if r.user_id == body.user_id and r.rating is not None and r.rating >= body.min_rating
    ]
    if len(usable) < MIN_EXAMPLES:
        raise InvalidRequest(
            f"At least {MIN_EXAMPLES} e-mails rated {body.min_rating} or more are needed to train "
            f"a personal model; user {body.user_id} has {len(usable)}.",
            param="user_id",
            code="too_few_examples",
        )
    started = await _start_scope(
        session=session,
        project_id=project_id,
        settings=settings,
        engines=engines,
        redactor=redactor,
        body=body.model_copy(update={"emails": records, "file_id": None}),
        scope=f"user:{body.user_id}",
        department=None,
        user_id=body.user_id,
        suffix=body.suffix or f"user-{body.user_id}-professional",
    )
    if started.job is None:
        raise InvalidRequest(
            f"User {body.user_id}'s mails leave no usable example after cleaning: "
            f"{started.skipped}",
            param="user_id",
            code="too_few_examples",
        )
    return started


async def _history(
    *, session: AsyncSession, project_id: str, body: ScopeModelsCreate, settings: Settings
) -> list[EmailRecord]:
    """Return the request's history (inline or from a file) and remember its mails."""
    from service.studio.service import _records  # one reader of history files

    records = list(
        await _records(
            session=session,
            project_id=project_id,
            files_dir=settings.files_dir,
            inline=body.emails,
            file_id=body.file_id,
            model=EmailRecord,
        )
    )
    await remember_emails(session=session, project_id=project_id, records=records)
    return records


# --- feedback ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """What a feedback is about: the prompt, the mail the model (or the user) wrote, its scope."""

    messages: list[dict[str, str]]
    original: str
    scope: str
    department: str
    language: str


async def _source(*, session: AsyncSession, project_id: str, body: FeedbackCreate) -> _Source:
    settings = await get_settings(session=session, project_id=project_id)
    if body.email_id is not None:
        email = (
            await session.exec(
                select(StudioEmail).where(
                    StudioEmail.project_id == project_id, StudioEmail.email_id == body.email_id
                )
            )
        ).first()
        if email is None:
            raise NotFound(
                f"No e-mail {body.email_id} in this project's history: build a dataset or train "
                "a model from the history that holds it first.",
                param="email_id",
            )
        system = prompts.system_prompt(email.department, email.language, settings.system_prompts)
        user = prompts.user_prompt(
            email.category, email.context, email.language, settings.user_templates
        )
        body_text = cleaning.clean_body(email.body, language=email.language)
        return _Source(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            original=prompts.completion(email.subject, body_text),
            scope=body.scope or f"department:{email.department}",
            department=email.department,
            language=email.language,
        )
    completion = (
        await session.exec(
            select(AliasCompletion).where(
                AliasCompletion.project_id == project_id,
                AliasCompletion.id == body.completion_id,
            )
        )
    ).first()
    if completion is None:
        raise NotFound(
            f"No completion {body.completion_id} answered through a scope's alias in this project.",
            param="completion_id",
        )
    department = (
        completion.scope.split(":", 1)[1] if completion.scope.startswith("department:") else ""
    )
    return _Source(
        messages=[{"role": m["role"], "content": m["content"]} for m in completion.messages],
        original=completion.answer,
        scope=body.scope or completion.scope,
        department=department,
        language=cleaning.detect_language(completion.answer) or "fr",
    )


async def add_feedback(
    *, session: AsyncSession, project_id: str, body: FeedbackCreate, wake: Any = None
) -> tuple[Feedback, Retraining | None]:
    """Record a feedback; when its scope crosses the threshold with enough rewrites and has a
    promoted model, start one retraining run (exactly once, however many posts race)."""
    source = await _source(session=session, project_id=project_id, body=body)
    aliases.alias_of(source.scope)  # a malformed scope is a 400
    feedback = Feedback(
        id=new_id("emailfb_"),
        project_id=project_id,
        scope=source.scope,
        email_id=body.email_id,
        completion_id=body.completion_id,
        rating=body.rating,
        improvements=body.improvements,
        created_at=now(),
    )
    session.add(feedback)
    await session.commit()
    run = await _maybe_start(session=session, project_id=project_id, scope=source.scope)
    await session.refresh(feedback)  # a lost race rolled the session back
    if run is not None and wake is not None:
        wake()
    return feedback, run


def _is_rewrite(feedback: Feedback) -> bool:
    return bool(feedback.improvements.strip())


def _distinct_rewrites(feedbacks: Iterable[Feedback]) -> int:
    """Count the preference pairs feedback makes: one rewrite of one mail posted twice is one
    pair (the DPO dataset drops the copy, and ten pairs must remain to train on)."""
    return len(
        {
            (f.email_id, f.completion_id, " ".join(f.improvements.split()))
            for f in feedbacks
            if _is_rewrite(f)
        }
    )


async def _maybe_start(*, session: AsyncSession, project_id: str, scope: str) -> Retraining | None:
    settings = await get_settings(session=session, project_id=project_id)
    threshold = int(settings.feedback_thresholds.get(scope, DEFAULT_THRESHOLD))
    pending = list(
        await session.exec(
            select(Feedback).where(
                Feedback.project_id == project_id,
                Feedback.scope == scope,
                col(Feedback.retraining_id).is_(None),
            )
        )
    )
    rewrites = _distinct_rewrites(pending)
    if len(pending) < threshold or rewrites < MIN_REWRITES:
        return None
    current = await aliases.find_alias(
        session=session, project_id=project_id, alias=aliases.alias_of(scope)
    )
    if current is None:
        return None  # nothing to improve on yet: the feedback waits for a promoted model
    latest = (
        await session.exec(
            select(func.max(Retraining.generation)).where(
                Retraining.project_id == project_id, Retraining.scope == scope
            )
        )
    ).one()
    generation = (latest or 0) + 1
    run = Retraining(
        id=new_id("emailrun_"),
        project_id=project_id,
        scope=scope,
        kind="feedback",
        generation=generation,
        status="starting",
        base_model=current.model,
        n_feedback=0,
        n_pairs=0,
        created_at=now(),
        updated_at=now(),
    )
    session.add(run)
    try:
        await session.flush()
        # Claim the feedback in the same transaction: a concurrent run claims none of it.
        claimed = await session.exec(
            update(Feedback)
            .where(
                col(Feedback.project_id) == project_id,
                col(Feedback.scope) == scope,
                col(Feedback.retraining_id).is_(None),
            )
            .values(retraining_id=run.id)
        )
        run.n_feedback = claimed.rowcount
        run.n_pairs = _distinct_rewrites(
            await session.exec(select(Feedback).where(Feedback.retraining_id == run.id))
        )
        if run.n_feedback < threshold or run.n_pairs < MIN_REWRITES:
            await session.rollback()  # another post's run took the feedback first
            return None
        session.add(run)
        await session.commit()
    except IntegrityError:
        await session.rollback()  # another post started this generation
        return None
    await session.refresh(run)
    return run


# --- the watcher --------------------------------------------------------------------------------


class Watcher:
    """Moves the studio's runs forward: builds feedback DPO jobs, evaluates, promotes."""

    def __init__(
        self,
        *,
        database: Database,
        engines: Engines,
        settings: Settings,
        redactor: LazyRedactor,
        interval: float = 5.0,
    ) -> None:
        self.database, self.engines, self.settings = database, engines, settings
        self.redactor, self.interval = redactor, interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask for a pass soon (from the event loop's thread)."""
        self._wake.set()

    async def run(self) -> None:
        """Pass every interval, or when woken, until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception:
                log.exception("studio watcher pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def poll_once(self) -> int:
        """Move each active run one step; return how many moved."""
        async with self.database.session() as session:
            runs = list(
                await session.exec(
                    select(Retraining)
                    .where(col(Retraining.status).in_(ACTIVE))
                    .order_by(col(Retraining.pk))
                )
            )
        moved = 0
        for run in runs:
            try:
                moved += await self._step(run)
            except APIError as error:
                await self._set(run, "failed", detail=error.message)
                moved += 1
        return moved

    async def _set(
        self, run: Retraining, status: str, *, expect: str | None = None, **values: Any
    ) -> bool:
        """Change a run's status (only from `expect`, when given); tell whether it changed."""
        async with self.database.session() as session:
            condition = [col(Retraining.id) == run.id]
            if expect is not None:
                condition.append(col(Retraining.status) == expect)
            result = await session.exec(
                update(Retraining)
                .where(*condition)
                .values(status=status, updated_at=now(), **values)
            )
            await session.commit()
        changed = bool(result.rowcount)
        if changed:
            run.status = status
            for name, value in values.items():
                setattr(run, name, value)
        return changed

    async def _step(self, run: Retraining) -> int:
        if run.status == "starting":
            # One process prepares the job: whoever moves the run to "preparing" first.
            if not await self._set(run, "preparing", expect="starting"):
                return 0
            return await self._start_job(run)
        if run.status == "preparing" and now() - run.updated_at > STALE_PREPARING_SECONDS:
            await self._set(run, "starting", expect="preparing")
            return 1
        if run.status == "evaluating" and now() - run.updated_at > STALE_EVALUATION_SECONDS:
            # Its evaluator stopped (a restart): evaluate again.
            await self._set(run, "training", expect="evaluating")
            return 1
        if run.status == "training":
            async with self.database.session() as session:
                job = await jobs.get_job(
                    session=session, project_id=run.project_id, job_id=str(run.job_id)
                )
            if job.status in {"failed", "cancelled"}:
                await self._set(run, "failed", detail=f"job {job.id} {job.status}")
                return 1
            if job.status != "succeeded" or job.fine_tuned_model is None:
                return 0
            if run.kind == "initial":
                return await self._promote_first(run, job.fine_tuned_model)
            if not await self._set(run, "evaluating", expect="training"):
                return 0  # another process evaluates it
            return await self._evaluate(run, job.fine_tuned_model)
        return 0

    async def _start_job(self, run: Retraining) -> int:
        """Build the DPO file from the run's feedback and start the job on the scope's model."""
        async with self.database.session() as session:
            pairs = await self._pairs(session, run)
            dataset = await create_preferences(
                session=session,
                project_id=run.project_id,
                files_dir=self.settings.files_dir,
                body=PreferencesCreate(pairs=pairs, validation_fraction=0.2),
                redactor=self.redactor,
                registry=self.engines.registry,
            )
            day = datetime.now(UTC).strftime("%Y%m%d")
            job = await jobs.create_job(
                session=session,
                project_id=run.project_id,
                body=JobCreate.model_validate(
                    {
                        "model": run.base_model,
                        "training_file": dataset.training_file,
                        "validation_file": dataset.validation_file,
                        "suffix": f"improved-{day}",
                        "metadata": {"studio_scope": run.scope, "studio_run": run.id},
                        "method": {"type": "dpo", "dpo": {"hyperparameters": FEEDBACK_DPO}},
                    }
                ),
                engines=self.engines,
                settings=self.settings,
            )
        await self._set(run, "training", expect="preparing", job_id=job.id, dataset_id=dataset.id)
        return 1

    async def _pairs(self, session: AsyncSession, run: Retraining) -> list[PreferencePair]:
        """Return the run's rewrites as preference pairs: the rewrite over the original."""
        rows = await session.exec(
            select(Feedback).where(Feedback.retraining_id == run.id).order_by(col(Feedback.pk))
        )
        pairs = []
        for feedback in rows:
            if not _is_rewrite(feedback):
                continue
            source = await _source(
                session=session,
                project_id=run.project_id,
                body=FeedbackCreate(
                    email_id=feedback.email_id,
                    completion_id=feedback.completion_id,
                    rating=feedback.rating,
                    scope=feedback.scope,
                ),
            )
            prompt = next(m["content"] for m in reversed(source.messages) if m["role"] == "user")
            subject = source.original.split("\n\n", 1)[0] if "\n\n" in source.original else ""
            rewrite = feedback.improvements.strip()
            preferred = (
                f"{subject}\n\n{rewrite}"
                if subject and not rewrite.startswith(subject)
                else rewrite
            )
            pairs.append(
                PreferencePair(
                    prompt=prompt,
                    preferred_completion=preferred,
                    non_preferred_completion=source.original,
                    department=source.department,
                    language=source.language,
                )
            )
        return pairs

    async def _promote_first(self, run: Retraining, model: str) -> int:
        """Promote a scope's first model; a scope that has one keeps it (promote by hand).

        The run leaves "training" in the promotion's own transaction: of the watchers that see the
        job end (one per worker process), exactly one promotes, and the alias's history has one
        line."""
        alias = aliases.alias_of(run.scope)
        async with self.database.session() as session:
            if await aliases.find_alias(session=session, project_id=run.project_id, alias=alias):
                await self._set(
                    run, "kept", expect="training", detail="the scope already has a model"
                )
                return 1
            claimed = await session.exec(
                update(Retraining)
                .where(col(Retraining.id) == run.id, col(Retraining.status) == "training")
                .values(status="promoted", updated_at=now())
            )
            if not claimed.rowcount:
                await session.rollback()
                return 0  # another watcher promoted it
            try:
                await aliases.promote(  # commits the run's new status with the alias
                    session=session,
                    project_id=run.project_id,
                    alias=alias,
                    model=model,
                    reason=f"first model of {run.scope} (job {run.job_id})",
                )
            except Conflict:
                # The alias was promoted by hand meanwhile: that model stays.
                await self._set(
                    run, "kept", expect="training", detail="the scope already has a model"
                )
                return 1
        run.status = "promoted"
        return 1

    async def _evaluate(self, run: Retraining, candidate: str) -> int:
        """Evaluate the candidate against the scope's current model; promote it if it passes."""
        async with self.database.session() as session:
            held_out = await self._held_out(session, run)
        evaluation = await create_evaluation(
            database=self.database,
            engines=self.engines,
            project_id=run.project_id,
            files_dir=self.settings.files_dir,
            body=EvaluationCreate(
                model=candidate,
                prompts=held_out,
                compare_to=CompareTo(model=run.base_model),
                temperature=0,
                max_tokens=300,
            ),
            redactor=self.redactor,
        )
        verdict = (evaluation.summary or {}).get("verdict") or {}
        if not verdict.get("passed"):
            reasons = verdict.get("reasons") or [evaluation.error or "evaluation failed"]
            await self._set(
                run, "rejected", evaluation_id=evaluation.id, detail="; ".join(map(str, reasons))
            )
            return 1
        async with self.database.session() as session:
            await aliases.promote(
                session=session,
                project_id=run.project_id,
                alias=aliases.alias_of(run.scope),
                model=candidate,
                reason=f"feedback retraining {run.id}: evaluation passed",
                evaluation_id=evaluation.id,
            )
        await self._set(run, "promoted", evaluation_id=evaluation.id)
        return 1

    async def _held_out(self, session: AsyncSession, run: Retraining) -> list[str | PromptItem]:
        """Return the prompts and reference mails (the rewrites) the run is judged on: the DPO
        dataset's validation pairs where it has some, else its training pairs."""
        dataset = await get_dataset(
            session=session, project_id=run.project_id, dataset_id=str(run.dataset_id)
        )
        path = content_path(
            self.settings.files_dir, dataset.validation_file or dataset.training_file
        )
        items: list[str | PromptItem] = []
        for line in path.read_text(encoding="utf-8").splitlines()[:HELD_OUT]:
            pair = json.loads(line)
            messages = pair["input"]["messages"]
            system = next((m["content"] for m in messages if m["role"] == "system"), None)
            items.append(
                PromptItem(
                    prompt=messages[-1]["content"],
                    system=system,
                    reference=pair["preferred_output"][0]["content"],
                )
            )
        return items


async def feedback_status(*, session: AsyncSession, project_id: str, scope: str) -> FeedbackStatus:
    """Return a scope's waiting feedback, its threshold, its model and its runs."""
    alias = aliases.alias_of(scope)
    settings = await get_settings(session=session, project_id=project_id)
    pending = list(
        await session.exec(
            select(Feedback).where(
                Feedback.project_id == project_id,
                Feedback.scope == scope,
                col(Feedback.retraining_id).is_(None),
            )
        )
    )
    current = await aliases.find_alias(session=session, project_id=project_id, alias=alias)
    runs = await session.exec(
        select(Retraining)
        .where(Retraining.project_id == project_id, Retraining.scope == scope)
        .order_by(col(Retraining.pk).desc())
    )
    return FeedbackStatus(
        scope=scope,
        threshold=int(settings.feedback_thresholds.get(scope, DEFAULT_THRESHOLD)),
        min_rewrites=MIN_REWRITES,
        pending_feedback=len(pending),
        pending_rewrites=_distinct_rewrites(pending),
        current_model=current.model if current else None,
        runs=[RunObject.from_row(run) for run in runs],
    )


async def get_run(*, session: AsyncSession, project_id: str, run_id: str) -> Retraining:
    """Return the project's run, or raise NotFound."""
    row = (
        await session.exec(
            select(Retraining).where(Retraining.id == run_id, Retraining.project_id == project_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"No such training run: {run_id}", param="run_id")
    return row
