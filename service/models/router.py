"""HTTP routes of the models API: `/v1/models`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.deps import CallerDep, EnginesDep, RegistryDep, SessionDep, SettingsDep
from service.exports import service as exports
from service.models import service
from service.models.schemas import ModelDeleted, ModelList, ModelObject

router = APIRouter(prefix="/v1/models", tags=["Models"])

ModelName = Annotated[
    str,
    Path(
        description="A base model, fine-tuned model or checkpoint name (may contain colons).",
        examples=["ft:gpt-4o-mini-2024-07-18:personal:support-fr:9o1eNNKO"],
    ),
]


@router.get("", operation_id="listModels", summary="List models", response_model=ModelList)
async def list_models(caller: CallerDep, session: SessionDep, registry: RegistryDep) -> ModelList:
    """List the base models, your fine-tuned models, and the models shared with your project."""
    data = await service.list_models(
        session=session, registry=registry, project_id=caller.project_id
    )
    return ModelList(data=data)


@router.get(
    "/{model:path}",
    operation_id="retrieveModel",
    summary="Retrieve a model",
    response_model=ModelObject,
)
async def retrieve_model(
    model: ModelName, caller: CallerDep, session: SessionDep, registry: RegistryDep
) -> ModelObject:
    """Return a model you can use."""
    return await service.get_model(
        session=session, registry=registry, project_id=caller.project_id, name=model
    )


@router.delete(
    "/{model:path}",
    operation_id="deleteModel",
    summary="Delete a fine-tuned model",
    response_model=ModelDeleted,
)
async def delete_model(
    model: ModelName,
    caller: CallerDep,
    session: SessionDep,
    engines: EnginesDep,
    settings: SettingsDep,
) -> ModelDeleted:
    """Delete one of your fine-tuned models, its weights and its exports."""
    name = await service.delete_model(
        session=session, engines=engines, project_id=caller.project_id, name=model
    )
    await exports.forget_model(session=session, files_dir=settings.files_dir, model=name)
    return ModelDeleted(id=name)
