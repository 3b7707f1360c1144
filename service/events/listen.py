"""PostgreSQL LISTEN: wake the poller when another process commits job events."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 30.0


# Connect arguments that SQLAlchemy's asyncpg adapter consumes itself; asyncpg refuses them.
_ADAPTER_ONLY = (
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "async_creator_fn",
)


def asyncpg_connect_args(url: str) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for `asyncpg.connect` from a SQLAlchemy URL, translated as the engine's own
    connections are (so `?ssl=require` works here too); other query options, such as
    `application_name`, become server settings, as in an asyncpg DSN."""
    parsed = make_url(url)
    args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
    for name in _ADAPTER_ONLY:
        kwargs.pop(name, None)
    accepted = inspect.signature(asyncpg.connect).parameters
    settings = {name: str(kwargs.pop(name)) for name in list(kwargs) if name not in accepted}
    if settings:
        kwargs["server_settings"] = {**kwargs.get("server_settings", {}), **settings}
    return list(args), dict(kwargs)


class Listener:
    """Holds one connection that LISTENs on `channel` and calls `on_notify` for each NOTIFY.

    After (re)connecting it calls `on_notify` once too: whatever was committed while it was not
    listening is picked up by the next pass.
    """

    def __init__(self, url: str, channel: str, on_notify: Callable[[], None]) -> None:
        self._connect_args = asyncpg_connect_args(url)
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
                args, kwargs = self._connect_args
                connection = await asyncpg.connect(*args, **kwargs)
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(self._channel, self._notified)
                delay = RECONNECT_SECONDS
                self.connected.set()
                self._on_notify()
                await lost.wait()
                log.warning("LISTEN connection lost; reconnecting")
            except Exception as error:  # whatever it is, listening must go on
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
