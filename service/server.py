"""The uvicorn server of `serve`: ends open event streams first when it shuts down.

uvicorn waits for open responses before running the app's shutdown, and an SSE response never
ends on its own; closing the hub first ends every stream (WebSockets get 1001, going away).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

_TICKET = re.compile(r"(ticket=)[^&\s\"']+")


class RedactTickets(logging.Filter):
    """Hide stream tickets in log lines (uvicorn logs each request's query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's arguments; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        record.msg = _redact(record.msg)
        return True


def _redact(value: Any) -> Any:
    return _TICKET.sub(r"\1<redacted>", value) if isinstance(value, str) else value


def redact_tickets_in_logs() -> None:
    """Install `RedactTickets` on uvicorn's loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTickets) for f in logger.filters):
            logger.addFilter(RedactTickets())


# Each open stream keeps a few hundred objects alive; with the default threshold (700) a fan-out
# to 1,000 subscribers triggers collections whose full passes stop the loop for ~200 ms
# (bench/stream_latency.py). A fan-out allocates a lot and frees nearly all of it.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Collect the young generation less often, so full collections are rare."""
    gc.set_threshold(*GC_THRESHOLDS)


# How long shutdown waits for open streams to close themselves.
STREAMS_CLOSE_SECONDS = 1.0


class ServiceServer(uvicorn.Server):
    """A uvicorn server that closes the app's event hub before waiting for connections."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve, with stream tickets hidden from uvicorn's logs and the GC tuned for streams."""
        # After uvicorn has configured its loggers (Config.__init__ did), before any request.
        redact_tickets_in_logs()
        tune_gc()
        await super().serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the hub, then shut down as uvicorn does."""
        hub = getattr(self.app.state, "hub", None)
        if hub is not None:
            hub.close()
            # Let the streams send their own close (1001) before uvicorn closes what is left.
            deadline = asyncio.get_running_loop().time() + STREAMS_CLOSE_SECONDS
            while hub.subscriber_count() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        await super().shutdown(sockets)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, answering a handshake that websockets refuses.

    websockets refuses a handshake it cannot parse (a request line over 8 KiB: 414; header
    fields too large: 431) by queueing its answer, but uvicorn only flushes answers to handshakes
    that parse: the client got nothing and the socket stayed open for minutes. This sends the
    answer and closes the connection.
    """

    def data_received(self, data: bytes) -> None:
        """Take bytes as uvicorn does; answer and close a handshake websockets refused."""
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()


def server_config(app: FastAPI, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn settings of the service."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=True,
        ws=WebSocketProtocol,
        # Stream messages are small JSON; compressing each one for each subscriber costs more
        # CPU than it saves on the wire.
        ws_per_message_deflate=False,
        # Clients send nothing the streams read; a large frame is only a way to use memory.
        ws_max_size=64 * 1024,
        # A stuck client must not hold a shutdown forever.
        timeout_graceful_shutdown=10,
    )
