"""HTTP routes of the providers that run jobs: their webhooks, and the exit (admin).

`/v1/webhooks/{provider}` takes no API key: a delivery is authenticated by its Standard Webhooks
signature, which the provider's engine verifies with the provider's `webhook_secret`.
`/v1/providers/{provider}/...` need an admin key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from service.deps import AdminDep, DatabaseDep, EnginesDep
from service.engines import provider_exit
from service.engines.schemas import ExitRequest
from service.errors import NotFound
from service.projects import service as projects

router = APIRouter(tags=["Webhooks"])
ProviderName = Annotated[str, Path(max_length=32, description="The provider's name.")]


@router.post(
    "/v1/webhooks/{provider}",
    operation_id="receiveProviderWebhook",
    summary="Receive a provider's webhook (extension)",
    responses={
        400: {"description": "Bad signature, stale timestamp or not an event."},
        409: {"description": "A delivery already received (replay)."},
    },
    openapi_extra={"security": []},  # signed by the provider, not sent with an API key
)
async def receive_provider_webhook(
    provider: ProviderName,
    request: Request,
    engines: EnginesDep,
    database: DatabaseDep,
) -> dict[str, Any]:
    """Take a `fine_tuning.job.*` webhook from a provider of `FT_PROVIDERS`: its signature is
    checked (`webhook-id`, `webhook-timestamp`, `webhook-signature`), a replay or a delivery
    more than 5 minutes old is refused, and the job it names is synced at once."""
    engine = engines.get(provider)
    if engine is None:
        raise NotFound(f"No provider named '{provider}'.", code="webhook_not_found")
    payload = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    await engine.receive_webhook(database=database, payload=payload, headers=headers)
    return {"received": True}


@router.get(
    "/v1/providers/{provider}/inventory",
    operation_id="getProviderInventory",
    summary="A provider's files, jobs and models (extension, admin)",
    tags=["Providers"],
)
async def get_provider_inventory(
    provider: ProviderName, caller: AdminDep, engines: EnginesDep, database: DatabaseDep
) -> dict[str, Any]:
    """List the provider account's fine-tuning files, jobs and fine-tuned models, with their
    shutdown dates and what of them was imported or recorded here."""
    return await provider_exit(engines, provider, database).inventory()


@router.post(
    "/v1/providers/{provider}/exit",
    operation_id="startProviderExit",
    summary="Import a provider's files and jobs, record its models (extension, admin)",
    tags=["Providers"],
    status_code=202,
)
async def start_provider_exit(
    provider: ProviderName,
    body: ExitRequest,
    request: Request,
    caller: AdminDep,
    engines: EnginesDep,
    database: DatabaseDep,
) -> JSONResponse:
    """Start importing (files, then jobs with their events, checkpoints and models) into a
    project, and recording each fine-tuned model's answers; follow it with GET. A run that is
    stopped can be started again: it continues and doubles nothing."""
    exit_ = provider_exit(engines, provider, database)
    project_id = body.project_id or caller.project_id
    async with database.session() as session:
        await projects.get_project(session=session, project_id=project_id)
    run = request.app.state.exit_runs.start(
        exit_, project_id=project_id, steps=list(body.steps), prompts_file=body.prompts_file
    )
    return JSONResponse(run.as_dict(), status_code=202)


@router.get(
    "/v1/providers/{provider}/exit",
    operation_id="getProviderExit",
    summary="The last exit run from a provider (extension, admin)",
    tags=["Providers"],
)
async def get_provider_exit(
    provider: ProviderName,
    request: Request,
    caller: AdminDep,
    engines: EnginesDep,
    database: DatabaseDep,
) -> dict[str, Any]:
    """Where the last run started by this process stands, and what it did."""
    provider_exit(engines, provider, database)  # 404 for an unknown provider
    run = request.app.state.exit_runs.latest(provider)
    if run is None:
        raise NotFound(f"No exit from {provider} was started.", code="exit_not_found")
    result: dict[str, Any] = run.as_dict()
    return result
