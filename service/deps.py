"""Typed FastAPI dependencies: settings, database session, engines, registry and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth import Caller, authenticate
from service.db import Database
from service.engines.base import Engines
from service.models.registry import ModelRegistry
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    """Return the settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """Return the app's database."""
    database: Database = request.app.state.database
    return database


def get_engines(request: Request) -> Engines:
    """Return the app's engines."""
    engines: Engines = request.app.state.engines
    return engines


def get_registry(request: Request) -> ModelRegistry:
    """Return the registry of the base models the app's engines offer."""
    return get_engines(request).registry


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Open one database session for the request."""
    async with get_database(request).session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
EnginesDep = Annotated[Engines, Depends(get_engines)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_caller(request: Request) -> Caller:
    """Authenticate the request's bearer key."""
    # A session of its own, closed at once: the request's session must not hold a database
    # connection while, say, a slow upload streams in.
    async with get_database(request).session() as session:
        return await authenticate(
            session=session, authorization=request.headers.get("authorization")
        )


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """Authenticate the request and require an admin key."""
    caller.require_admin()
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
