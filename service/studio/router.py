"""HTTP routes of the email studio: `/v1/email/...`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from service.deps import (
    CallerDep,
    DatabaseDep,
    EnginesDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
)
from service.models import aliases
from service.studio import compose, evaluations, learning, service
from service.studio.schemas import (
    AliasChangeList,
    AliasChangeObject,
    AliasList,
    AliasObject,
    ComposeObject,
    ComposeRequest,
    DatasetCreate,
    DatasetList,
    DatasetObject,
    EvaluationCreate,
    EvaluationList,
    EvaluationObject,
    FeedbackCreate,
    FeedbackObject,
    FeedbackStatus,
    PreferencesCreate,
    PromoteRequest,
    RedactionList,
    RedactRequest,
    RollbackRequest,
    RunObject,
    Scope,
    ScopeModelsCreate,
    ScopeTraining,
    ScopeTrainingList,
    SettingsObject,
    SettingsUpdate,
)

router = APIRouter(prefix="/v1/email", tags=["Email studio"])


def get_redactor(request: Request) -> service.LazyRedactor:
    """Return the app's redactor (built on first use)."""
    redactor: service.LazyRedactor = request.app.state.redactor
    return redactor


RedactorDep = Annotated[service.LazyRedactor, Depends(get_redactor)]


def get_watcher(request: Request) -> learning.Watcher | None:
    """Return the app's studio watcher (None until the app has started)."""
    watcher: learning.Watcher | None = getattr(request.app.state, "watcher", None)
    return watcher


WatcherDep = Annotated[learning.Watcher | None, Depends(get_watcher)]


def _scope_training(started: learning.Started) -> ScopeTraining:
    return ScopeTraining(
        scope=started.scope,
        alias=aliases.PREFIX + started.scope,
        dataset_id=started.dataset_id,
        job_id=started.job.id if started.job else None,
        job_status=started.job.status if started.job else None,
        run_id=started.run_id,
        skipped=started.skipped,
    )


DatasetId = Annotated[str, Path(max_length=64, examples=["emailds_4Jm2kQ8nX0aB7cD9eF1gH3iJ"])]


@router.post(
    "/redact",
    operation_id="redactEmailTexts",
    summary="Replace personal data in texts",
    response_model=RedactionList,
)
async def redact_email_texts(
    body: RedactRequest, caller: CallerDep, redactor: RedactorDep
) -> RedactionList:
    """Find names, e-mail addresses, phone numbers, IBAN/BIC, addresses and identifiers, and
    replace them with placeholders that are the same for the same value across the texts."""
    return await service.redact_texts(redactor=await redactor.get(), body=body)


@router.get(
    "/settings",
    operation_id="retrieveEmailSettings",
    summary="The project's studio settings",
    response_model=SettingsObject,
)
async def retrieve_email_settings(caller: CallerDep, session: SessionDep) -> SettingsObject:
    """Return the prompts and redaction choice the project's datasets are built with."""
    row = await service.get_settings(session=session, project_id=caller.project_id)
    return await service.settings_object(session=session, row=row)


@router.post(
    "/settings",
    operation_id="updateEmailSettings",
    summary="Change the project's studio settings",
    response_model=SettingsObject,
)
async def update_email_settings(
    body: SettingsUpdate, caller: CallerDep, session: SessionDep
) -> SettingsObject:
    """Override system prompts per department and language, user templates, redaction, or
    set the project's training budget (admin keys only)."""
    if "budget_usd" in body.model_fields_set:
        caller.require_admin()  # a project must not raise its own spending limit
    row = await service.update_settings(session=session, project_id=caller.project_id, body=body)
    return await service.settings_object(session=session, row=row)


@router.post(
    "/datasets",
    operation_id="createEmailDataset",
    summary="Build training files from e-mail history",
    response_model=DatasetObject,
)
async def create_email_dataset(
    body: DatasetCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    registry: RegistryDep,
    redactor: RedactorDep,
) -> DatasetObject:
    """Filter, clean, deduplicate and redact rated mails into chat-format fine-tune files
    (training and validation, split by thread), with a report of what was kept and why."""
    row = await service.create_dataset(
        session=session,
        project_id=caller.project_id,
        files_dir=settings.files_dir,
        body=body,
        redactor=redactor,
        registry=registry,
    )
    return DatasetObject.from_row(row)


@router.post(
    "/preferences",
    operation_id="createEmailPreferenceDataset",
    summary="Build a DPO file from preference pairs",
    response_model=DatasetObject,
)
async def create_email_preference_dataset(
    body: PreferencesCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    registry: RegistryDep,
    redactor: RedactorDep,
) -> DatasetObject:
    """Turn pairs of a better and a worse e-mail for one prompt into preference-format files
    (the seed's createPreferenceData), redacted, for a job with method dpo."""
    row = await service.create_preferences(
        session=session,
        project_id=caller.project_id,
        files_dir=settings.files_dir,
        body=body,
        redactor=redactor,
        registry=registry,
    )
    return DatasetObject.from_row(row)


@router.get(
    "/datasets",
    operation_id="listEmailDatasets",
    summary="List datasets",
    response_model=DatasetList,
)
async def list_email_datasets(
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> DatasetList:
    """Return the project's datasets, newest first."""
    rows, has_more = await service.list_datasets(
        session=session, project_id=caller.project_id, after=after, limit=limit
    )
    return DatasetList.of([DatasetObject.from_row(r) for r in rows], has_more=has_more)


@router.get(
    "/datasets/{dataset_id}",
    operation_id="retrieveEmailDataset",
    summary="Retrieve a dataset",
    response_model=DatasetObject,
)
async def retrieve_email_dataset(
    dataset_id: DatasetId, caller: CallerDep, session: SessionDep
) -> DatasetObject:
    """Return one of the project's datasets with its files and report."""
    row = await service.get_dataset(
        session=session, project_id=caller.project_id, dataset_id=dataset_id
    )
    return DatasetObject.from_row(row)


@router.get(
    "/aliases",
    operation_id="listEmailAliases",
    summary="List the scopes' model aliases",
    response_model=AliasList,
)
async def list_email_aliases(caller: CallerDep, session: SessionDep) -> AliasList:
    """Return every alias of the project and the model it names."""
    rows = await aliases.list_aliases(session=session, project_id=caller.project_id)
    return AliasList(data=[AliasObject.from_row(r) for r in rows])


@router.get(
    "/aliases/{scope}",
    operation_id="retrieveEmailAlias",
    summary="Retrieve a scope's alias",
    response_model=AliasObject,
)
async def retrieve_email_alias(scope: Scope, caller: CallerDep, session: SessionDep) -> AliasObject:
    """Return the model a scope's alias names now."""
    row = await service.get_scope_alias(session=session, project_id=caller.project_id, scope=scope)
    return AliasObject.from_row(row)


@router.post(
    "/aliases/{scope}/promote",
    operation_id="promoteEmailModel",
    summary="Promote a model for a scope",
    response_model=AliasObject,
)
async def promote_email_model(
    scope: Scope,
    body: PromoteRequest,
    caller: CallerDep,
    session: SessionDep,
    registry: RegistryDep,
) -> AliasObject:
    """Make the scope's alias (`email:<scope>`) name this model from now on."""
    row = await service.promote_scope(
        session=session, registry=registry, project_id=caller.project_id, scope=scope, body=body
    )
    return AliasObject.from_row(row)


@router.post(
    "/aliases/{scope}/rollback",
    operation_id="rollbackEmailModel",
    summary="Roll a scope back to its previous model",
    response_model=AliasObject,
)
async def rollback_email_model(
    scope: Scope, body: RollbackRequest, caller: CallerDep, session: SessionDep
) -> AliasObject:
    """Point the scope's alias back at the model promoted before the current one."""
    row = await aliases.rollback(
        session=session,
        project_id=caller.project_id,
        alias=aliases.alias_of(scope),
        reason=body.reason,
    )
    return AliasObject.from_row(row)


@router.get(
    "/aliases/{scope}/history",
    operation_id="listEmailAliasHistory",
    summary="A scope's promotions and rollbacks",
    response_model=AliasChangeList,
)
async def list_email_alias_history(
    scope: Scope, caller: CallerDep, session: SessionDep
) -> AliasChangeList:
    """Return the alias's changes, newest first."""
    rows = await aliases.history(
        session=session, project_id=caller.project_id, alias=aliases.alias_of(scope)
    )
    return AliasChangeList(data=[AliasChangeObject.from_row(r) for r in rows])


EvaluationId = Annotated[str, Path(max_length=64, examples=["emaileval_4Jm2kQ8nX0aB7cD9eF1gH3iJ"])]


@router.post(
    "/compose",
    operation_id="composeEmail",
    summary="Write an e-mail with a studio model, asked as it was trained",
    response_model=ComposeObject,
)
async def compose_email(
    body: ComposeRequest,
    caller: CallerDep,
    database: DatabaseDep,
    engines: EnginesDep,
    redactor: RedactorDep,
) -> ComposeObject:
    """Ask the model (or a scope's alias) for a mail with the department's system prompt and the
    user template, the context's personal data replaced by placeholders as in training; put the
    values back in the answer, sign with `sender`, and check it (the seed's
    generatePersonalizedEmail)."""
    return await compose.compose(
        database=database,
        engines=engines,
        redactor=redactor,
        project_id=caller.project_id,
        body=body,
    )


@router.post(
    "/evaluations",
    operation_id="createEmailEvaluation",
    summary="Evaluate a model on prompts, against another model or recorded answers",
    response_model=EvaluationObject,
)
async def create_email_evaluation(
    body: EvaluationCreate,
    caller: CallerDep,
    database: DatabaseDep,
    engines: EnginesDep,
    settings: SettingsDep,
    redactor: RedactorDep,
) -> EvaluationObject:
    """Answer each prompt (concurrently), check each answer (language, greeting, closing, no
    placeholder, no personal data of the training set), score it against its reference
    (ROUGE-L, held-out loss for local models), compare it head to head, and store the result.
    Answers when the evaluation is done (the seed's testFineTunedModel)."""
    row = await evaluations.create_evaluation(
        database=database,
        engines=engines,
        project_id=caller.project_id,
        files_dir=settings.files_dir,
        body=body,
        redactor=redactor,
    )
    return EvaluationObject.from_row(row)


@router.get(
    "/evaluations",
    operation_id="listEmailEvaluations",
    summary="List evaluations",
    response_model=EvaluationList,
)
async def list_email_evaluations(
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> EvaluationList:
    """Return the project's evaluations with their summaries, newest first."""
    rows, has_more = await evaluations.list_evaluations(
        session=session, project_id=caller.project_id, after=after, limit=limit
    )
    return EvaluationList.of(
        [EvaluationObject.from_row(r, with_results=False) for r in rows], has_more=has_more
    )


@router.get(
    "/evaluations/{evaluation_id}",
    operation_id="retrieveEmailEvaluation",
    summary="Retrieve an evaluation",
    response_model=EvaluationObject,
)
async def retrieve_email_evaluation(
    evaluation_id: EvaluationId, caller: CallerDep, session: SessionDep
) -> EvaluationObject:
    """Return an evaluation with its per-prompt results."""
    row = await evaluations.get_evaluation(
        session=session, project_id=caller.project_id, evaluation_id=evaluation_id
    )
    return EvaluationObject.from_row(row)


@router.post(
    "/models/departments",
    operation_id="trainEmailDepartmentModels",
    summary="Train one model per department",
    response_model=ScopeTrainingList,
)
async def train_email_department_models(
    body: ScopeModelsCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    engines: EnginesDep,
    redactor: RedactorDep,
) -> ScopeTrainingList:
    """Build one dataset per department from the history and start one job each (the seed's
    trainDepartmentModel); each model is promoted to `email:department:<name>` when it is the
    department's first. A department with too few usable mails is skipped, with the reason."""
    started = await learning.train_departments(
        session=session,
        project_id=caller.project_id,
        settings=settings,
        engines=engines,
        redactor=redactor,
        body=body,
    )
    return ScopeTrainingList(data=[_scope_training(s) for s in started])


@router.post(
    "/models/personal",
    operation_id="trainEmailPersonalModel",
    summary="Train a user's personal model",
    response_model=ScopeTraining,
)
async def train_email_personal_model(
    body: ScopeModelsCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    engines: EnginesDep,
    redactor: RedactorDep,
) -> ScopeTraining:
    """Train `email:user:<id>` from the user's own rated mails (the seed's
    trainPersonalizedModel); 400 under 10 usable examples."""
    started = await learning.train_personal(
        session=session,
        project_id=caller.project_id,
        settings=settings,
        engines=engines,
        redactor=redactor,
        body=body,
    )
    return _scope_training(started)


@router.post(
    "/feedback",
    operation_id="createEmailFeedback",
    summary="Rate a mail or a completion, with a rewrite",
    response_model=FeedbackObject,
)
async def create_email_feedback(
    body: FeedbackCreate, caller: CallerDep, session: SessionDep, watcher: WatcherDep
) -> FeedbackObject:
    """Record a rating (and the improved mail); when the scope's feedback reaches its threshold
    (50 by default) with at least 10 distinct rewrites, one DPO retraining starts on the scope's
    current model, and its model is promoted only if its evaluation passes."""
    feedback, run = await learning.add_feedback(
        session=session,
        project_id=caller.project_id,
        body=body,
        wake=watcher.wake if watcher else None,
    )
    return FeedbackObject(
        id=feedback.id,
        scope=feedback.scope,
        email_id=feedback.email_id,
        completion_id=feedback.completion_id,
        rating=feedback.rating,
        created_at=feedback.created_at,
        retraining=RunObject.from_row(run) if run else None,
    )


@router.get(
    "/feedback/{scope}",
    operation_id="retrieveEmailFeedbackStatus",
    summary="A scope's feedback and retrainings",
    response_model=FeedbackStatus,
)
async def retrieve_email_feedback_status(
    scope: Scope, caller: CallerDep, session: SessionDep
) -> FeedbackStatus:
    """Return the feedback waiting, the threshold, the current model and every run."""
    return await learning.feedback_status(
        session=session, project_id=caller.project_id, scope=scope
    )


@router.get(
    "/runs/{run_id}",
    operation_id="retrieveEmailTrainingRun",
    summary="Retrieve a training run",
    response_model=RunObject,
)
async def retrieve_email_training_run(
    run_id: Annotated[str, Path(max_length=64)], caller: CallerDep, session: SessionDep
) -> RunObject:
    """Return a scope's initial training or feedback retraining, with its status."""
    row = await learning.get_run(session=session, project_id=caller.project_id, run_id=run_id)
    return RunObject.from_row(row)
