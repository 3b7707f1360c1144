"""The ASGI application: routers, OpenAI-style error handling, request ids and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.checkpoints.router import router as checkpoints_router
from service.dashboard import router as dashboard_router
from service.db import Database
from service.engines import build_engines, exit_runs
from service.engines.base import Engines
from service.engines.router import router as provider_webhooks_router
from service.errors import APIError, ErrorResponse, error_envelope
from service.events.hub import Hub
from service.events.listen import Listener
from service.events.router import router as events_router
from service.events.tail import EventTail
from service.exports.builder import ExportBuilder
from service.exports.router import router as exports_router
from service.exports.service import EXPORTS_TOPIC
from service.files.router import router as files_router
from service.guards import RequestGuardMiddleware
from service.idempotency import HEADER_PARAMETER, IdempotencyMiddleware, honours_key
from service.inference.router import router as inference_router
from service.janitor import run_periodically
from service.jobs.graders import router as graders_router
from service.jobs.lifecycle import EVENTS_TOPIC
from service.jobs.router import router as jobs_router
from service.models.router import router as models_router
from service.poller import Poller
from service.projects import service as projects
from service.projects.router import router as projects_router
from service.settings import Settings
from service.studio.learning import Watcher
from service.studio.router import router as studio_router
from service.studio.seed import router as seed_router
from service.studio.service import LazyRedactor
from service.uploads.router import router as uploads_router
from service.validation_errors import describe_validation_error
from service.webhooks.dispatcher import Dispatcher
from service.webhooks.router import router as webhooks_router
from service.webhooks.service import WEBHOOKS_TOPIC

log = logging.getLogger(__name__)

POSTGRES_SAFETY_POLL_SECONDS = 1.0
# Event streams starting at once (authentication, cursor, snapshots, replay pages): a storm of
# connections queues behind these instead of in front of every other request
# (bench/stream_connect_storm.py).
STREAM_STARTS = 4

DESCRIPTION = """
OpenAI-compatible fine-tuning service for IAPosteManager. Point the official `openai` SDK at
`<this server>/v1` with one of your API keys: files, fine-tuning jobs (supervised, DPO,
reinforcement), events, checkpoints, checkpoint permissions and models work unchanged.
Every error has OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.
"""

TAGS = [
    {"name": "Files", "description": "Upload training data and download results."},
    {"name": "Fine-tuning", "description": "Jobs, their events and checkpoints, and sharing."},
    {"name": "Models", "description": "Base models and the models your jobs produced."},
    {"name": "Chat", "description": "Use a local base or fine-tuned model."},
    {"name": "Organization", "description": "Projects and API keys (admin keys only)."},
    {
        "name": "Webhooks",
        "description": "Signed `fine_tuning.job.*` events sent to your endpoints, as OpenAI sends "
        "them; and webhooks taken in from upstream providers.",
    },
    {"name": "Providers", "description": "Leaving a provider: inventory, import, record."},
    {
        "name": "Email studio",
        "description": "From rated e-mail history to department and personal models: datasets "
        "with personal data removed, evaluations, feedback-driven retraining, model aliases.",
    },
    {"name": "Health", "description": "Liveness for load balancers and orchestrators."},
]


class RequestContextMiddleware:
    """Give every response an `x-request-id`, and turn unexpected crashes into a 500 envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Details go to the log under the request id, never to the client.
            log.exception(
                "unhandled error in %s %s [%s]", scope["method"], scope["path"], request_id
            )
            if started:
                raise
            response = JSONResponse(
                error_envelope(
                    f"The server had an error while processing your request ({request_id}).",
                    "server_error",
                ),
                status_code=500,
            )
            await response(scope, receive, send_with_id)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, code = describe_validation_error(exc.errors())
        return JSONResponse(
            error_envelope(message, "invalid_request_error", param=param, code=code),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = str(exc.detail)
        error_type = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path; list them all.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return JSONResponse(
            error_envelope(message, error_type), status_code=exc.status_code, headers=headers
        )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Return every method some route fully matches on the request's path (asked the way the
    router asks, so routers included in any way are covered)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in app.routes):
            allowed.append(method)
    return allowed


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the envelope names `param`)."},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key."},
    403: {"model": ErrorResponse, "description": "The key may not do this."},
    404: {"model": ErrorResponse, "description": "No such object in your project."},
    409: {"model": ErrorResponse, "description": "Conflicts with the object's state."},
    413: {"model": ErrorResponse, "description": "The request body is over the size limit."},
}


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    """Describe errors as they really are: OpenAI's envelope, never FastAPI's 422 shape."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=TAGS,
    )
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            operation["responses"].pop("422", None)
            # Documented where the middleware honours it: POSTs that need an API key.
            if honours_key(method, path) and operation.get("security") != []:
                operation.setdefault("parameters", []).append(HEADER_PARAMETER)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schema["components"]["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key."}
    }
    schema["security"] = [{"bearerAuth": []}]
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings, *, engines: Engines | None = None) -> FastAPI:
    """Build the application; the database must already be migrated (see `service migrate`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.database_url, echo=settings.sql_echo)
        app.state.database = database
        try:
            async with database.session() as session:
                if settings.bootstrap_api_key is not None:
                    created = await projects.ensure_bootstrap_key(
                        session=session, value=settings.bootstrap_api_key.get_secret_value()
                    )
                    if created:
                        log.info("created project 'default' with the bootstrap admin key")
                if await projects.count_keys(session=session) == 0:
                    log.warning(
                        "no API key exists yet: set FT_BOOTSTRAP_API_KEY, or run "
                        "`python -m service keys create --project default --admin`"
                    )
            hub = Hub(capacity=settings.stream_queue_size)
            app.state.hub = hub
            app.state.stream_starts = anyio.CapacityLimiter(STREAM_STARTS)
            # On PostgreSQL NOTIFY wakes the poller; the interval is only a safety net there.
            interval = settings.event_poll_seconds
            if database.is_postgresql:
                interval = max(interval, POSTGRES_SAFETY_POLL_SECONDS)
            steps = [EventTail(database=database, hub=hub)]
            for engine in app.state.engines:
                steps += engine.poll_steps(database=database)
            poller = Poller(steps, interval=interval)
            app.state.poller = poller
            await poller.poll_once()  # finds the end of the log before any stream can start
            database.after_commit(EVENTS_TOPIC, poller.wake)
            dispatcher = Dispatcher(database=database, settings=settings)
            app.state.webhooks = dispatcher
            database.after_commit(WEBHOOKS_TOPIC, dispatcher.wake)
            background = [
                asyncio.create_task(poller.run()),
                asyncio.create_task(dispatcher.run()),
            ]
            if database.is_postgresql:

                def wake_all() -> None:
                    # A job's end in another process comes with an event: its webhooks are due.
                    poller.wake()
                    dispatcher.wake()

                listener = Listener(settings.database_url, EVENTS_TOPIC, wake_all)
                background.append(asyncio.create_task(listener.run()))
            stopping = anyio.Event()
            workers = []
            if settings.embedded_worker:
                workers = [
                    asyncio.create_task(engine.run(database=database, stopping=stopping))
                    for engine in app.state.engines
                ]
            watcher = Watcher(
                database=database,
                engines=app.state.engines,
                settings=settings,
                redactor=app.state.redactor,
                interval=settings.studio_poll_seconds,
            )
            app.state.watcher = watcher
            builder = ExportBuilder(database=database, engines=app.state.engines, settings=settings)
            app.state.exports = builder
            database.after_commit(EXPORTS_TOPIC, builder.wake)
            if settings.embedded_worker:  # like the engines' workers; tests step them themselves
                background.append(asyncio.create_task(watcher.run()))
                background.append(asyncio.create_task(builder.run()))
            janitor = asyncio.create_task(
                run_periodically(
                    database=database,
                    files_dir=settings.files_dir,
                    idempotency_ttl=settings.idempotency_ttl_seconds,
                    interval=settings.janitor_interval_seconds,
                )
            )
            # What start-up created (torch, spaCy and their modules: 600,000 objects) lives as
            # long as the service: out of the collector's full passes, each of which would
            # otherwise rescan it all (0.26 s of a core) while a local job trains.
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # collectable again once the app is done (tests start many)
                stopping.set()
                app.state.exit_runs.cancel()  # a provider exit continues when started again
                hub.close()  # open streams end
                poller.stop()
                dispatcher.stop()
                janitor.cancel()
                for task in background[2:]:
                    task.cancel()
                for task in [janitor, *background]:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                for worker in workers:
                    await worker  # a running job is released by its trainer stopping
                await dispatcher.aclose()
        finally:
            await app.state.engines.aclose()
            await database.dispose()

    app = FastAPI(
        title="IAPosteManager fine-tuning service",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.operation_id or route.name,
    )
    app.state.settings = settings
    app.state.engines = engines or build_engines(settings)
    app.state.exit_runs = exit_runs()
    app.state.redactor = LazyRedactor()
    _install_error_handlers(app)
    routers = (
        files_router,
        uploads_router,
        jobs_router,
        graders_router,
        events_router,
        checkpoints_router,
        exports_router,  # before models_router, whose /v1/models/{model:path} would take its paths
        models_router,
        inference_router,
        projects_router,
        provider_webhooks_router,
        webhooks_router,
        studio_router,
        seed_router,
        dashboard_router,
    )
    for router in routers:
        app.include_router(router, responses=_ERROR_RESPONSES)
    app.openapi = lambda: _openapi_document(app)  # type: ignore[method-assign]

    # HEAD is answered too (load balancers use it); the document lists GET only.
    @app.head("/healthz", include_in_schema=False)
    @app.get(
        "/healthz",
        tags=["Health"],
        operation_id="health",
        summary="Liveness check",
        openapi_extra={"security": []},  # answers without a key
    )
    async def health() -> dict[str, Any]:
        """Answer 200 when the process serves requests."""
        return {"status": "ok", "version": __version__}

    # The last added is the outermost: the request id wraps the guards, which wrap idempotency.
    app.add_middleware(
        IdempotencyMiddleware, state=app.state, ttl_seconds=settings.idempotency_ttl_seconds
    )
    app.add_middleware(RequestGuardMiddleware, max_body_bytes=settings.max_json_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
