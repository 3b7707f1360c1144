"""A WebSocket handshake the protocol refuses (a URL over 8 KiB, huge headers) is answered and
closed at once, not left open with nothing said."""

from __future__ import annotations

import asyncio

import pytest

PATH = "/v1/fine_tuning/jobs/ftjob-x/events/stream"


async def handshake(live: str, target: str, extra_headers: str = "") -> tuple[bytes, float]:
    """Send a raw upgrade request; return what came back before the server closed, and when."""
    host, port = live.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"GET {target} HTTP/1.1\r\nHost: {live}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        ).encode()
    )
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await asyncio.wait_for(reader.read(), timeout=10)  # read() ends when it closes
    writer.close()
    return answer, loop.time() - started


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        (f"{PATH}?x={'a' * 10_000}", "", b"414"),
        (PATH, f"X-Big: {'b' * 10_000}\r\n", b"431"),
    ],
)
async def test_a_refused_handshake_is_answered_and_closed(live, target, headers, status):
    answer, seconds = await handshake(live, target, headers)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert seconds < 2
