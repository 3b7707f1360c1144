"""Rules for models: which names a project may use, train from, list and delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from service.checkpoints.models import Checkpoint, CheckpointPermission
from service.engines.base import Engines, ModelTarget
from service.errors import InvalidRequest, NotFound, PermissionDenied
from service.jobs.models import Job
from service.models.aliases import resolve_alias
from service.models.models import FineTunedModel
from service.models.registry import BaseModelSpec, ModelRegistry
from service.models.schemas import ModelObject


@dataclass(frozen=True)
class Trainable:
    """A model a job can start from: a base, or a fine-tuned model or checkpoint on a base."""

    base: BaseModelSpec
    name: str
    location: str | None = None


@dataclass(frozen=True)
class Derived:
    """A fine-tuned model or checkpoint visible to a project."""

    name: str
    base_model: str
    created: int
    owned_by: str
    project_id: str
    location: str | None
    is_checkpoint: bool
    # The engine of the job that produced it, which answers for it.
    engine: str


async def _shared_with(session: AsyncSession, project_id: str, name: str) -> bool:
    grant = await session.exec(
        select(CheckpointPermission.id).where(
            CheckpointPermission.model_name == name, CheckpointPermission.project_id == project_id
        )
    )
    return grant.first() is not None


def _from_model(model: FineTunedModel, engine: str) -> Derived:
    return Derived(
        name=model.id,
        base_model=model.base_model,
        created=model.created_at,
        owned_by=model.owned_by,
        project_id=model.project_id,
        location=model.location,
        is_checkpoint=False,
        engine=engine,
    )


def _models_with_engine() -> Select[FineTunedModel, str]:
    return select(FineTunedModel, Job.engine).join(Job, col(Job.id) == col(FineTunedModel.job_id))


async def find_derived(session: AsyncSession, name: str) -> Derived | None:
    """Return the fine-tuned model or checkpoint called `name`, whoever owns it."""
    model = (await session.exec(_models_with_engine().where(FineTunedModel.id == name))).first()
    if model is not None:
        return _from_model(*model)
    found = (
        await session.exec(
            select(Checkpoint, Job.base_model, Job.organization_id, Job.engine)
            .join(Job, col(Job.id) == col(Checkpoint.job_id))
            .where(Checkpoint.fine_tuned_model_checkpoint == name)
        )
    ).first()
    if found is None:
        return None
    checkpoint, base_model, organization_id, engine = found
    return Derived(
        name=name,
        base_model=base_model,
        created=checkpoint.created_at,
        owned_by=organization_id,
        project_id=checkpoint.project_id,
        location=checkpoint.location,
        is_checkpoint=True,
        engine=engine,
    )


async def visible_derived(session: AsyncSession, project_id: str, name: str) -> Derived | None:
    """Return the derived model `name` if the project owns it or it was shared with it."""
    derived = await find_derived(session, name)
    if derived is None:
        return None
    if derived.project_id == project_id or await _shared_with(session, project_id, name):
        return derived
    return None


async def get_visible_derived(*, session: AsyncSession, project_id: str, name: str) -> Derived:
    """Return the derived model `name` if the project may use it, or raise NotFound."""
    derived = await visible_derived(session, project_id, name)
    if derived is None:
        raise _model_not_found(name)
    return derived


def _model_not_found(name: str) -> NotFound:
    return NotFound(
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


async def resolve_trainable(
    *, session: AsyncSession, registry: ModelRegistry, project_id: str, name: str
) -> Trainable:
    """Resolve a job's `model` (an alias too) to its base, or raise a 400 pointing to GET
    /v1/models."""
    try:
        name = await resolve_alias(session=session, project_id=project_id, name=name)
    except NotFound as missing:
        raise InvalidRequest(missing.message, param="model", code="model_not_available") from None
    base = registry.resolve(name)
    if base is None:
        derived = await visible_derived(session, project_id, name)
        if derived is not None:
            base = registry.resolve(derived.base_model)
            if base is not None:
                _ensure_trainable(base, registry)
                return Trainable(base=base, name=derived.name, location=derived.location)
        raise InvalidRequest(
            f"Model '{name}' is not available for fine-tuning. "
            "GET /v1/models lists the models you can use.",
            param="model",
            code="model_not_available",
        )
    _ensure_trainable(base, registry)
    return Trainable(base=base, name=base.id)


def _ensure_trainable(base: BaseModelSpec, registry: ModelRegistry) -> None:
    """Refuse a base that is shut down, or that its provider no longer trains."""
    if base.is_shut_down():
        raise InvalidRequest(
            f"Model {base.id} was shut down on {base.shutdown_date}.",
            param="model",
            code="model_shut_down",
        )
    if not base.is_closed_to_training():
        return
    open_ = [m.id for m in registry.all() if not m.is_closed_to_training()]
    alternatives = ", ".join(open_) if open_ else "none is configured"
    raise InvalidRequest(
        f"Model {base.id} can no longer be fine-tuned: its provider stopped creating jobs on "
        f"{base.training_cutoff}. Models you can fine-tune here: {alternatives} "
        "(GET /v1/models).",
        param="model",
        code="model_training_closed",
    )


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _base_object(base: BaseModelSpec) -> ModelObject:
    return ModelObject(
        id=base.id,
        created=base.created,
        owned_by=base.owned_by,
        shutdown_date=_iso(base.shutdown_date),
        training_cutoff=_iso(base.training_cutoff),
        warning=base.retirement_warning(),
    )


def _derived_object(derived: Derived, registry: ModelRegistry) -> ModelObject:
    """A fine-tuned model or checkpoint retires with its base: it shows the base's dates."""
    own = {"id": derived.name, "created": derived.created, "owned_by": derived.owned_by}
    base = registry.resolve(derived.base_model)
    return _base_object(base).model_copy(update=own) if base else ModelObject(**own)


async def list_models(
    *, session: AsyncSession, registry: ModelRegistry, project_id: str
) -> list[ModelObject]:
    """Return the serving base models, the project's fine-tuned models and those shared with it."""
    models = [_base_object(b) for b in registry.all() if not b.is_shut_down()]
    own = await session.exec(
        _models_with_engine()
        .where(FineTunedModel.project_id == project_id)
        .order_by(col(FineTunedModel.pk))
    )
    models += [_derived_object(_from_model(*row), registry) for row in own.all()]
    grants = await session.exec(
        select(CheckpointPermission.model_name)
        .where(CheckpointPermission.project_id == project_id)
        .order_by(col(CheckpointPermission.pk))
    )
    for name in grants.all():
        derived = await find_derived(session, name)
        if derived is not None:
            models.append(_derived_object(derived, registry))
    return models


async def get_model(
    *, session: AsyncSession, registry: ModelRegistry, project_id: str, name: str
) -> ModelObject:
    """Return one model the project can use, or raise NotFound."""
    base = registry.resolve(name)
    if base is not None:
        # An alias (gpt-4o-mini) answers as itself, as OpenAI's models API does.
        return _base_object(base).model_copy(update={"id": name})
    derived = await get_visible_derived(session=session, project_id=project_id, name=name)
    return _derived_object(derived, registry)


async def delete_model(
    *, session: AsyncSession, engines: Engines, project_id: str, name: str
) -> str:
    """Delete one of the project's fine-tuned models: its engine's part first, then the record
    and the grants on it. Return its name."""
    derived = await find_derived(session, name)
    if derived is None or derived.is_checkpoint or derived.project_id != project_id:
        visible = derived is not None and (
            derived.project_id == project_id or await _shared_with(session, project_id, name)
        )
        if engines.registry.resolve(name) is not None or visible:
            raise PermissionDenied(
                f"You are not allowed to delete the model '{name}'; only your own fine-tuned "
                "models can be deleted.",
                param="model",
                code="model_not_deletable",
            )
        raise _model_not_found(name)
    engine = engines.get(derived.engine)
    if engine is not None:
        # Before the record goes, and with no transaction held while it works: an engine that
        # cannot delete (its provider refuses) leaves the model as it was, to be tried again.
        await session.commit()
        await engine.delete_model(_target(derived))
    row = (await session.exec(select(FineTunedModel).where(FineTunedModel.id == name))).first()
    grants = await session.exec(
        select(CheckpointPermission).where(CheckpointPermission.model_name == name)
    )
    for grant in grants.all():
        await session.delete(grant)
    if row is not None:
        await session.delete(row)
    await session.commit()
    return name


def _target(derived: Derived) -> ModelTarget:
    return ModelTarget(name=derived.name, base_model=derived.base_model, location=derived.location)
