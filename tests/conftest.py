"""Shared fixtures: a fresh migrated database per test (SQLite, and PostgreSQL when it is up),
the real app on it, and an HTTP client. Databases are copied from a template migrated once."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.db import Database, upgrade
from service.engines.base import Engines
from service.models.registry import ModelRegistry
from service.settings import Settings
from tests.fake_engine import fake_engines

POSTGRES_ADMIN_URL = os.environ.get(
    "FT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_up() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _async_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{database}"


def _admin(sql: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not _postgres_up():
        pytest.skip("PostgreSQL is not reachable at " + POSTGRES_ADMIN_URL)
    name = f"ft_template_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{name}"')
    _admin(f'CREATE DATABASE "{name}"')
    asyncio.run(upgrade(_async_url(name)))
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database for one test."""
    if request.param == "sqlite":
        path = tmp_path / "service.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    name = f"ft_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _async_url(name)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (random, tiny) causal LM on disk, built once per test session."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No embedded worker: tests that train drive a worker themselves, one step at a time.
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", database_url=database_url, embedded_worker=False,
        _env_file=None,
    )


@pytest.fixture
def engines() -> Engines:
    """The app's engines: the test engine (tests/fake_engine.py); tests that train override it."""
    return fake_engines()


@pytest.fixture
def registry(engines: Engines) -> ModelRegistry:
    """The base models the engines offer (a test may add one, stamped with its engine)."""
    return engines.registry


@pytest.fixture
async def app(settings: Settings, engines: Engines) -> AsyncIterator[FastAPI]:
    application = create_app(settings, engines=engines)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def database(app: FastAPI) -> Database:
    db: Database = app.state.database
    return db


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
