"""The one module that names the concrete engines and builds a deployment's set from settings.

Everything else reaches engines through `service.engines.base`: the `Engine` interface and the
`Engines` collection with its model registry.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from service.engines.base import Engine, Engines, ModelTarget
from service.errors import InvalidRequest
from service.inference.schemas import ChatCompletion, ChatCompletionRequest
from service.models.registry import OPENAI_BASE_MODELS, BaseModelSpec
from service.settings import Settings

__all__ = ["Engine", "Engines", "ModelTarget", "build_engines", "prepare"]


class _OpenAICatalog(Engine):
    """OpenAI's fine-tunable bases, listed for compatibility: their jobs wait in `queued` until
    an upstream engine runs them."""

    name = "upstream"

    def base_models(self) -> Sequence[BaseModelSpec]:
        return OPENAI_BASE_MODELS

    async def complete(self, target: ModelTarget, request: ChatCompletionRequest) -> ChatCompletion:
        raise _not_served(target)

    async def complete_stream(
        self, target: ModelTarget, request: ChatCompletionRequest
    ) -> AsyncGenerator[dict[str, Any]]:
        raise _not_served(target)
        yield {}  # an async generator, like every engine's stream


def _not_served(target: ModelTarget) -> InvalidRequest:
    return InvalidRequest(
        f"The model '{target.name}' is not served by this deployment's local engine.",
        param="model",
        code="model_not_served",
    )


def prepare(settings: Settings) -> None:
    """Make the engines' assets ready before they start (packaged models are converted once)."""
    if settings.packaged_models:
        from service.engines.local.packaged import ensure_packaged_models

        ensure_packaged_models(settings.base_models_dir)


def build_engines(settings: Settings) -> Engines:
    """Build the deployment's engines: the local engine and OpenAI's catalog."""
    from service.engines.local.engine import LocalEngine

    return Engines([LocalEngine(settings=settings), _OpenAICatalog()])
