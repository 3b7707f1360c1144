"""Rules for chat completions: which model a name means for this project, and answering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidRequest
from service.ids import new_id, now
from service.inference.generator import Generator, Loaded, Params
from service.inference.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from service.models.registry import ModelRegistry
from service.models.service import get_visible_derived


@dataclass(frozen=True)
class Servable:
    """A model this project may call, as folders on disk."""

    name: str
    base_path: str
    adapter_path: str | None


async def resolve_servable(
    *, session: AsyncSession, registry: ModelRegistry, project_id: str, name: str
) -> Servable:
    """Resolve `name` to a local base plus an optional adapter, within the project's rights."""
    base = registry.resolve(name)
    adapter = None
    if base is None:
        derived = await get_visible_derived(session=session, project_id=project_id, name=name)
        base = registry.resolve(derived.base_model)
        adapter = derived.location
    if base is None or "path" not in base.extra:
        raise InvalidRequest(
            f"The model '{name}' is not served by this deployment's local engine.",
            param="model",
            code="model_not_served",
        )
    return Servable(name=name, base_path=base.extra["path"], adapter_path=adapter)


def _params(body: ChatCompletionRequest) -> Params:
    return Params(
        max_new_tokens=body.token_limit,
        temperature=body.temperature,
        top_p=body.top_p,
        n=body.n,
        stops=tuple(body.stops),
        seed=body.seed,
    )


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    # Chat templates know system, user and assistant; `developer` is OpenAI's new system.
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.content}
        for m in body.messages
    ]


async def _load(generator: Generator, servable: Servable) -> Loaded:
    return await anyio.to_thread.run_sync(generator.load, servable.base_path, servable.adapter_path)


async def complete(
    *, generator: Generator, servable: Servable, body: ChatCompletionRequest
) -> ChatCompletion:
    """Generate the completions, off the event loop."""
    loaded = await _load(generator, servable)
    prompt_tokens, results = await anyio.to_thread.run_sync(
        generator.generate, loaded, _messages(body), _params(body)
    )
    completion_tokens = sum(r.completion_tokens for r in results)
    return ChatCompletion(
        id=new_id("chatcmpl-"),
        created=now(),
        model=servable.name,
        choices=[
            Choice(
                index=i,
                message=AssistantMessage(content=r.text),
                finish_reason=r.finish_reason,
            )
            for i, r in enumerate(results)
        ],
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


async def complete_stream(
    *, generator: Generator, servable: Servable, body: ChatCompletionRequest
) -> AsyncIterator[str]:
    """Yield server-sent events in OpenAI's `chat.completion.chunk` format, then [DONE]."""
    loaded = await _load(generator, servable)
    prompt_tokens, pieces, outcome = await anyio.to_thread.run_sync(
        generator.stream, loaded, _messages(body), _params(body)
    )
    completion_id, created = new_id("chatcmpl-"), now()

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": servable.name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    while (piece := await anyio.to_thread.run_sync(next, pieces, None)) is not None:
        if piece:
            yield chunk({"content": piece})
    await anyio.to_thread.run_sync(outcome["thread"].join)
    finish = "stop" if outcome.get("stopped") else outcome["finish_reason"]
    yield chunk({}, finish)
    if body.stream_options and body.stream_options.include_usage:
        completion_tokens = outcome["completion_tokens"]
        usage = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": servable.name,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        yield f"data: {json.dumps(usage)}\n\n"
    yield "data: [DONE]\n\n"
