"""Alembic migrations on an empty database: upgrade to head, compare with the models, downgrade
to base, upgrade again. Runs on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.db import downgrade, upgrade
from service.tables import metadata
from tests.conftest import POSTGRES_ADMIN_URL, _admin, _async_url, _postgres_up


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (not copied from the migrated template)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    if not _postgres_up():
        pytest.skip("PostgreSQL is not reachable at " + POSTGRES_ADMIN_URL)
    name = f"ft_migrations_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield _async_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _schema_objects(connection: Connection) -> set[str]:
    inspector = sa.inspect(connection)
    names = set(inspector.get_table_names())
    if connection.dialect.name == "postgresql":  # SQLite has no sequences
        names |= {f"sequence {name}" for name in inspector.get_sequence_names()}
    return names


async def inspect_database(url: str) -> tuple[set[str], list[Any]]:
    """Return the database's tables (and sequences) and its differences from the models."""
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            objects = await connection.run_sync(_schema_objects)
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    return objects, differences


def _tables(objects: set[str]) -> set[str]:
    return {name for name in objects if not name.startswith("sequence ")}


async def test_upgrade_matches_models_and_downgrade_reverts(empty_database_url: str) -> None:
    expected_tables = set(metadata.tables) | {"alembic_version"}
    objects, _ = await inspect_database(empty_database_url)
    assert objects == set()

    await upgrade(empty_database_url)
    objects, differences = await inspect_database(empty_database_url)
    assert _tables(objects) == expected_tables
    assert differences == []

    await downgrade(empty_database_url, "base")
    objects, _ = await inspect_database(empty_database_url)
    assert objects == {"alembic_version"}  # no table, and no sequence, left behind

    await upgrade(empty_database_url)
    objects, differences = await inspect_database(empty_database_url)
    assert _tables(objects) == expected_tables
    assert differences == []
