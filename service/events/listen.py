"""PostgreSQL LISTEN: wake the poller when another process commits job events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 30.0


def asyncpg_dsn(url: str) -> str:
    """Turn a SQLAlchemy `postgresql+asyncpg://` URL into a DSN asyncpg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Holds one connection that LISTENs on `channel` and calls `on_notify` for each NOTIFY.

    After (re)connecting it calls `on_notify` once too: whatever was committed while it was not
    listening is picked up by the next pass.
    """

    def __init__(self, url: str, channel: str, on_notify: Callable[[], None]) -> None:
        self._dsn = asyncpg_dsn(url)
        self._channel = channel
        self._on_notify = on_notify
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with a growing delay after a lost connection."""
        delay = RECONNECT_SECONDS
        while True:
            lost = asyncio.Event()
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn)
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(self._channel, self._notified)
                delay = RECONNECT_SECONDS
                self.connected.set()
                self._on_notify()
                await lost.wait()
                log.warning("LISTEN connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("LISTEN connection failed (%s); retrying in %.0f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP_SECONDS)
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    await connection.close(timeout=5)

    def _notified(self, _connection: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._on_notify()


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _connection: event.set()
