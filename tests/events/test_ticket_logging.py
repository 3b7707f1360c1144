"""Stream tickets travel in URLs, so the real server must keep them out of its logs."""

from __future__ import annotations

from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.processes import serve, service_env

KEY = "sk-admin-logging-test-0123456789"


async def test_tickets_in_urls_are_redacted_from_the_server_logs(tmp_path: Path):
    env = service_env(
        data_dir=str(tmp_path / "data"),
        bootstrap_api_key=KEY,
        embedded_worker="0",
        log_level="info",
    )
    with serve(tmp_path, env) as server:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}
        ) as http:
            tickets = []
            for _ in range(2):
                response = await http.post("/v1/fine_tuning/stream_tickets")
                assert response.status_code == 200, response.text
                tickets.append(response.json()["ticket"])
        ws_url = server.url.replace("http://", "ws://")
        async with connect(f"{ws_url}/v1/fine_tuning/events/stream?ticket={tickets[0]}") as ws:
            await ws.close()
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get(
                "/v1/fine_tuning/events", params={"stream": "false", "ticket": tickets[1]}
            )
            assert response.status_code == 401  # a ticket only opens a stream
        logs = (tmp_path / "server.out").read_text() + server.stderr()
    assert "ticket=<redacted>" in logs
    for ticket in tickets:
        assert ticket not in logs
    assert KEY not in logs
