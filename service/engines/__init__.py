"""The one module that names the concrete engines and builds a deployment's set from settings.

Everything else reaches engines through `service.engines.base`: the `Engine` interface and the
`Engines` collection with its model registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.db import Database
from service.engines.base import Engine, Engines, ModelTarget
from service.errors import NotFound
from service.settings import Settings

if TYPE_CHECKING:
    from service.engines.upstream.exit import ExitRuns, ProviderExit

__all__ = [
    "Engine",
    "Engines",
    "exit_runs",
    "ModelTarget",
    "build_engines",
    "prepare",
    "provider_exit",
]


def prepare(settings: Settings) -> None:
    """Make the engines' assets ready before they start (packaged models are converted once)."""
    if settings.packaged_models:
        from service.engines.local.packaged import ensure_packaged_models

        ensure_packaged_models(settings.base_models_dir)


def build_engines(settings: Settings) -> Engines:
    """Build the deployment's engines: the local engine, and one per configured provider."""
    from service.engines.local.engine import LocalEngine
    from service.engines.upstream.engine import UpstreamEngine

    return Engines(
        [
            LocalEngine(settings=settings),
            *(UpstreamEngine(provider=p, settings=settings) for p in settings.providers),
        ]
    )


def provider_exit(engines: Engines, name: str, database: Database) -> ProviderExit:
    """The exit (inventory, import, record) of the provider called `name`; 404 if none is."""
    from service.engines.upstream.engine import UpstreamEngine
    from service.engines.upstream.exit import ProviderExit

    engine = engines.get(name)
    if not isinstance(engine, UpstreamEngine):
        raise NotFound(f"No provider named '{name}' is configured.", code="provider_not_found")
    return ProviderExit(engine=engine, database=database)


def exit_runs() -> ExitRuns:
    """A registry of the provider exits a process runs in the background."""
    from service.engines.upstream.exit import ExitRuns

    return ExitRuns()
