"""Database access: the async engine, sessions, column helpers and Alembic migrations."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"

# Session.info keys of the commit hooks (see `Database.after_commit` and `flag_commit`).
_HOOKS = "ft_commit_hooks"
_FLAGS = "ft_commit_flags"


def pk_column() -> sa.Column[int]:
    """Return an internal auto-increment key; it orders rows for cursor pagination."""
    # SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
    return sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def json_column(name: str, *, nullable: bool = True) -> sa.Column[Any]:
    """Return a JSON column where Python None is stored as SQL NULL."""
    return sa.Column(name, sa.JSON(none_as_null=True), nullable=nullable)


class Database:
    """One async engine and its session factory."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            ensure_sqlite_folder(url)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sqlite_file = make_url(url).database if url.startswith("sqlite") else None
        self._hooks: dict[str, list[Callable[[], None]]] = {}
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False, info={_HOOKS: self._hooks}
        )

    @property
    def is_sqlite(self) -> bool:
        """Whether this database is SQLite."""
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Open a session; uncommitted work is rolled back on exit."""
        async with self._sessions() as session:
            yield session

    @property
    def is_postgresql(self) -> bool:
        """Whether this database is PostgreSQL."""
        return self.engine.dialect.name == "postgresql"

    def change_marker(self) -> tuple[int, ...] | None:
        """A fingerprint of the SQLite files that changes when any process commits; None when
        there is no such cheap check (PostgreSQL, in-memory SQLite).

        A commit appends to the write-ahead log (`-wal`) and a checkpoint rewrites the main
        file, so their sizes and modification times move. A stat costs microseconds, a query
        through the driver's thread about a millisecond.
        """
        if not self._sqlite_file or self._sqlite_file == ":memory:":
            return None
        marker: list[int] = []
        for path in (self._sqlite_file, self._sqlite_file + "-wal"):
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                marker += [0, 0]
            else:
                marker += [stat.st_size, stat.st_mtime_ns]
        return tuple(marker)

    def after_commit(self, topic: str, callback: Callable[[], None]) -> None:
        """Call `callback` after each commit of a session that flagged `topic` (same process)."""
        self._hooks.setdefault(topic, []).append(callback)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def flag_commit(session: AsyncSession, topic: str) -> bool:
    """Flag the session's transaction for the `topic` commit hooks; False if already flagged."""
    flags: set[str] = session.sync_session.info.setdefault(_FLAGS, set())
    if topic in flags:
        return False
    flags.add(topic)
    return True


@sa.event.listens_for(Session, "after_commit")
def _run_commit_hooks(session: Session) -> None:
    flags: set[str] = session.info.pop(_FLAGS, set())
    hooks: dict[str, list[Callable[[], None]]] = session.info.get(_HOOKS, {})
    for topic in flags:
        for callback in hooks.get(topic, ()):
            callback()


@sa.event.listens_for(Session, "after_transaction_end")
def _clear_commit_flags(session: Session, transaction: Any) -> None:
    # However the transaction ended (commit, rollback, close), the next one starts unflagged.
    if transaction.parent is None:
        session.info.pop(_FLAGS, None)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer (API and worker processes share the file);
    # foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file, which SQLite will not do itself."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def alembic_config(url: str) -> Config:
    """Build the Alembic configuration for `url` without reading alembic.ini."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.attributes["database_url"] = url
    return cfg


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    ensure_sqlite_folder(url)
    # Alembic's async env runs its own event loop, so it needs a thread without one.
    await anyio.to_thread.run_sync(command.upgrade, alembic_config(url), revision)


async def downgrade(url: str, revision: str = "base") -> None:
    """Revert migrations down to `revision`."""
    await anyio.to_thread.run_sync(command.downgrade, alembic_config(url), revision)
