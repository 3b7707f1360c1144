"""Rules for chat completions: which engine answers a model name for this project, and framing."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.engines.base import Engine, Engines, ModelTarget
from service.errors import APIError, error_envelope
from service.ids import now
from service.inference.schemas import ChatCompletionRequest
from service.models import aliases
from service.models.aliases import resolve_alias
from service.models.models import AliasCompletion
from service.models.service import get_visible_derived

log = logging.getLogger(__name__)


async def resolve_target(
    *, session: AsyncSession, engines: Engines, project_id: str, name: str
) -> tuple[Engine, ModelTarget]:
    """Resolve `name` (an alias too), within the project's rights, to the engine that answers."""
    name = await resolve_alias(session=session, project_id=project_id, name=name)
    base = engines.registry.resolve(name)
    if base is not None:
        engine = engines.serving(base.engine, model=name)
        return engine, ModelTarget(name=name, base_model=base.id)
    derived = await get_visible_derived(session=session, project_id=project_id, name=name)
    engine = engines.serving(derived.engine, model=name)
    return engine, ModelTarget(name=name, base_model=derived.base_model, location=derived.location)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def open_stream(
    engine: Engine, target: ModelTarget, request: ChatCompletionRequest
) -> AsyncIterator[str]:
    """Start an engine's stream and return it framed as OpenAI's server-sent events.

    The first chunk is awaited here, so an error before any text (an unknown model, a provider
    that refuses) is an ordinary error response. An error after the stream started can only
    travel in the stream: it goes as `data: {"error": ...}`, which the openai SDK raises.
    """
    chunks = engine.complete_stream(target, request)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = None

    async def events() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield _sse(first)
                async for chunk in chunks:
                    yield _sse(chunk)
        except APIError as error:
            yield _sse(error.envelope())
            return
        except Exception:
            log.exception("streamed completion of %s failed", target.name)
            yield _sse(error_envelope("The server had an error while generating.", "server_error"))
            return
        finally:
            await chunks.aclose()
        yield "data: [DONE]\n\n"

    return events()


async def complete(
    *, database: Database, engines: Engines, project_id: str, request: ChatCompletionRequest
) -> dict[str, Any]:
    """Answer a chat completion request (not streamed) for the project."""
    async with database.session() as session:
        engine, target = await resolve_target(
            session=session, engines=engines, project_id=project_id, name=request.model
        )
    # No database connection is held while the model generates.
    return await engine.complete(target, request)


async def heldout_loss(
    *,
    database: Database,
    engines: Engines,
    project_id: str,
    model: str,
    conversations: list[list[dict[str, str]]],
) -> float | None:
    """Return a model's mean loss on the last message of each conversation, where its engine
    can compute one."""
    async with database.session() as session:
        engine, target = await resolve_target(
            session=session, engines=engines, project_id=project_id, name=model
        )
    return await engine.heldout_loss(target, conversations)


async def record_alias_completion(
    *,
    database: Database,
    project_id: str,
    request: ChatCompletionRequest,
    completion: dict[str, Any],
) -> None:
    """Keep an answer given through a scope's alias, so that feedback can name it by its id."""
    choices = completion.get("choices") or []
    answer = (choices[0].get("message") or {}).get("content") if choices else None
    if not isinstance(answer, str) or not isinstance(completion.get("id"), str):
        return
    async with database.session() as session:
        session.add(
            AliasCompletion(
                id=completion["id"],
                project_id=project_id,
                scope=request.model.removeprefix(aliases.PREFIX),
                model=str(completion.get("model") or ""),
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                answer=answer,
                created_at=now(),
            )
        )
        await session.commit()
