"""The one interface every engine implements, and the set of engines a deployment runs.

An engine trains jobs and answers for the models they produce. The service keeps its own record
of every job, event, checkpoint and model whatever engine runs it; an engine reports back only
through `service.jobs.engine_calls`. Nothing outside `service/engines` knows which engine is which:
it finds a job's engine by the name on the job, and a model's by the registry.

    Engine            a few verbs, several real implementations (like httpx's transport)
     ├── local        trains on this machine: TRL + LoRA in a trainer process (engines/local)
     └── upstream     one per configured provider, through the openai SDK (engines/upstream)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from service.errors import InvalidRequest, NotFound
from service.models.registry import BaseModelSpec, ModelRegistry

if TYPE_CHECKING:
    from service.db import Database
    from service.inference.schemas import ChatCompletionRequest
    from service.jobs.models import Job
    from service.poller import PollStep

ClientAction = Literal["cancel", "pause", "resume"]


ExportProgress = Callable[[float, str], Awaitable[None]]


class ExportFailed(RuntimeError):
    """An export could not be written (the reason is for the client)."""


class EngineConfigError(ValueError):
    """The engines as configured cannot run together (a model offered twice, say)."""


@dataclass(frozen=True)
class ModelTarget:
    """A model a request names, resolved: a base model, or a fine-tuned model or checkpoint."""

    name: str
    base_model: str
    # Where the engine keeps the fine-tuned weights (None for a base model itself).
    location: str | None = None


class Engine(ABC):
    """What the service asks of an engine. Only `base_models` and completions are required."""

    #: Unique in a deployment; stored on every job the engine runs.
    name: str
    #: True when training data never leaves this deployment's machines (so unredacted
    #: personal data may be trained on).
    keeps_data_local: bool = False

    @abstractmethod
    def base_models(self) -> Sequence[BaseModelSpec]:
        """Return the base models this engine trains and serves."""

    def check_job(self, *, base: BaseModelSpec, method: Mapping[str, Any]) -> None:
        """Refuse, with a 400, a job this engine cannot run; called before the job row exists."""
        return None

    async def run(self, *, database: Database, stopping: anyio.Event) -> None:
        """Do the engine's own background work (a worker) until `stopping` is set."""
        return None

    def poll_steps(self, *, database: Database) -> list[PollStep]:
        """Return the steps this engine adds to the poller of `serve` (e.g. remote sync)."""
        return []

    async def control(self, job: Job, action: ClientAction) -> bool:
        """Carry a client's cancel, pause or resume to where the job runs, before it is recorded.

        Return True when the engine's own log will tell of the change (the service then records
        it without an event of its own). An engine that reads the job's status from the database
        (the local one) has nothing to do; one that runs jobs elsewhere raises an APIError when
        the other side refuses.
        """
        return False

    @abstractmethod
    async def complete(self, target: ModelTarget, request: ChatCompletionRequest) -> dict[str, Any]:
        """Answer a chat completion request with a `chat.completion` object."""

    @abstractmethod
    def complete_stream(
        self, target: ModelTarget, request: ChatCompletionRequest
    ) -> AsyncGenerator[dict[str, Any]]:
        """Yield the `chat.completion.chunk` objects of a streamed answer."""

    async def receive_webhook(
        self, *, database: Database, payload: bytes, headers: Mapping[str, str]
    ) -> None:
        """Verify and act on a webhook from where the engine runs jobs (404: it takes none)."""
        raise NotFound(f"No webhooks are taken for '{self.name}'.", code="webhook_not_found")

    async def heldout_loss(
        self, target: ModelTarget, conversations: list[list[dict[str, str]]]
    ) -> float | None:
        """Return the model's mean loss per token of each conversation's last message, or None
        where the engine cannot compute it (a provider's model)."""
        return None

    #: The formats `export` writes (`adapter`, `merged`, `gguf`); none for a provider's models,
    #: whose weights cannot leave it.
    export_formats: frozenset[str] = frozenset()

    async def export(
        self, target: ModelTarget, fmt: str, out_dir: Path, progress: ExportProgress
    ) -> None:
        """Write the fine-tuned model `target` in format `fmt` into the folder `out_dir`,
        reporting `progress(fraction, message)`; raise `ExportFailed` with a reason."""
        raise ExportFailed(f"The engine '{self.name}' cannot export models.")

    async def delete_model(self, target: ModelTarget) -> None:
        """Remove what the engine holds for a fine-tuned model that is being deleted."""
        return None

    async def aclose(self) -> None:
        """Release what the engine holds open (clients, caches)."""
        return None


class Engines:
    """The engines of a deployment, and the registry of the base models they offer."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self._engines: dict[str, Engine] = {}
        for engine in engines:
            if engine.name in self._engines:
                raise EngineConfigError(f"two engines are named {engine.name!r}")
            self._engines[engine.name] = engine
        self.registry = ModelRegistry()
        offered_by: dict[str, str] = {}
        for engine in engines:
            for spec in engine.base_models():
                for name in (spec.id, *spec.aliases):
                    if name in offered_by:
                        raise EngineConfigError(
                            f"model {name!r} is offered by both {offered_by[name]!r} and "
                            f"{engine.name!r}; a model name must belong to one engine"
                        )
                    offered_by[name] = engine.name
                self.registry.add(dataclasses.replace(spec, engine=engine.name))

    def __iter__(self) -> Iterator[Engine]:
        return iter(self._engines.values())

    def get(self, name: str) -> Engine | None:
        """Return the engine called `name`, or None (e.g. a provider no longer configured)."""
        return self._engines.get(name)

    def serving(self, name: str, *, model: str) -> Engine:
        """Return the engine called `name`, or a 400 saying the model is not served here."""
        engine = self._engines.get(name)
        if engine is None:
            raise InvalidRequest(
                f"The model '{model}' is not served by this deployment (its engine "
                f"'{name}' is not configured).",
                param="model",
                code="model_not_served",
            )
        return engine

    async def aclose(self) -> None:
        """Close every engine."""
        for engine in self._engines.values():
            await engine.aclose()
