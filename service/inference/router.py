"""HTTP route of chat completions: `/v1/chat/completions`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from service.deps import CallerDep, DatabaseDep, EnginesDep, SessionDep
from service.inference import service
from service.inference.schemas import ChatCompletion, ChatCompletionRequest
from service.inference.service import record_alias_completion
from service.models import aliases

router = APIRouter(prefix="/v1/chat", tags=["Chat"])


@router.post(
    "/completions",
    operation_id="createChatCompletion",
    summary="Create a chat completion",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    caller: CallerDep,
    session: SessionDep,
    engines: EnginesDep,
    database: DatabaseDep,
) -> JSONResponse | StreamingResponse:
    """Answer with a base model, a fine-tuned model or a checkpoint: a local one (LoRA adapter
    on its base, loaded on demand) or one an upstream provider serves (forwarded).
    `stream: true` sends OpenAI's `chat.completion.chunk` events."""
    engine, target = await service.resolve_target(
        session=session, engines=engines, project_id=caller.project_id, name=body.model
    )
    await session.close()  # hold no database connection while generating
    if body.stream:
        return StreamingResponse(
            await service.open_stream(engine, target, body),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    # The engine's object as it is: a provider's fields (tool calls, ...) pass through.
    completion = await engine.complete(target, body)
    if aliases.is_alias(body.model):
        # Answers given through a scope's alias can be rated later by their id.
        await record_alias_completion(
            database=database, project_id=caller.project_id, request=body, completion=completion
        )
    return JSONResponse(completion)
