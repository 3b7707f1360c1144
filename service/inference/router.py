"""HTTP route of chat completions: `/v1/chat/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service.deps import CallerDep, RegistryDep, SessionDep
from service.inference import service
from service.inference.generator import Generator
from service.inference.schemas import ChatCompletion, ChatCompletionRequest

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
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    registry: RegistryDep,
) -> ChatCompletion | StreamingResponse:
    """Answer with a local base model, a fine-tuned model or a checkpoint (LoRA adapter on its
    base, loaded on demand). `stream: true` sends OpenAI's `chat.completion.chunk` events."""
    servable = await service.resolve_servable(
        session=session, registry=registry, project_id=caller.project_id, name=body.model
    )
    await session.close()  # hold no database connection while generating
    generator: Generator = request.app.state.generator
    if body.stream:
        return StreamingResponse(
            service.complete_stream(generator=generator, servable=servable, body=body),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await service.complete(generator=generator, servable=servable, body=body)
