"""The upstream engine in real server processes: an API process killed with SIGKILL mid-run loses
and doubles nothing; and a second instance of this service, training for real, as the provider."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.db import Database
from tests.factories import Tenant, chat_file, job_method
from tests.processes import serve, service_env, start_server, stop_server
from tests.upstream.conftest import mirrored_events
from tests.upstream.openai_double import OpenAIDouble

FAST = {
    "upstream_sync_running_seconds": "0.2",
    "upstream_sync_queued_seconds": "0.2",
    "upstream_timeout_seconds": "5",
    "upstream_lease_seconds": "2",
    "log_level": "warning",
}
FINAL = ("succeeded", "failed", "cancelled")


async def _upload(http: httpx.AsyncClient, key: str, content: bytes) -> str:
    response = await http.post(
        "/v1/files",
        headers={"Authorization": f"Bearer {key}"},
        data={"purpose": "fine-tune"},
        files={"file": ("emails.jsonl", content, "application/jsonl")},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def _events(http: httpx.AsyncClient, key: str, job_id: str) -> list[dict[str, Any]]:
    response = await http.get(
        f"/v1/fine_tuning/jobs/{job_id}/events",
        headers={"Authorization": f"Bearer {key}"},
        params={"limit": 1000},
    )
    return list(reversed(response.json()["data"]))


async def test_a_killed_api_process_loses_and_doubles_nothing(database_url: str, tmp_path: Path):
    key = secrets.token_hex(20)
    headers = {"Authorization": f"Bearer {key}"}
    async with OpenAIDouble(steps=4) as double:
        provider = {
            "name": "openai",
            "base_url": double.url,
            "api_key": double.api_key,
            "models": [
                {
                    "id": "gpt-4o-mini",
                    "shutdown_date": "2099-12-31",
                    "training_cutoff": "2099-12-01",
                }
            ],
        }
        env = service_env(
            data_dir=str(tmp_path / "data"),
            database_url=database_url,
            bootstrap_api_key=key,
            providers=json.dumps([provider]),
            **FAST,
        )
        first = await asyncio.to_thread(start_server, tmp_path / "first", env)
        try:
            async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
                training = await _upload(http, key, chat_file(10))
                job_ids = []
                for _ in range(8):
                    created = await http.post(
                        "/v1/fine_tuning/jobs",
                        headers=headers,
                        json={"model": "gpt-4o-mini", "training_file": training},
                    )
                    job_ids.append(created.json()["id"])
            double.tick_every(0.15)
            while len(double.jobs) < 3:  # mid-run: some jobs there, some not yet
                await asyncio.sleep(0.02)
            os.kill(first.process.pid, signal.SIGKILL)
            await asyncio.to_thread(first.process.wait)
        finally:
            await asyncio.to_thread(stop_server, first)

        second = await asyncio.to_thread(start_server, tmp_path / "second", env)
        database = Database(database_url)
        try:
            async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
                deadline = asyncio.get_running_loop().time() + 90
                while True:
                    jobs = [
                        (await http.get(f"/v1/fine_tuning/jobs/{j}", headers=headers)).json()
                        for j in job_ids
                    ]
                    if all(j["status"] in FINAL for j in jobs):
                        break
                    assert asyncio.get_running_loop().time() < deadline, second.stderr()
                    await asyncio.sleep(0.3)
                await asyncio.sleep(1)  # a last pass finds nothing new
                by_ours = {
                    (j.body.get("metadata") or {})["ft_job_id"]: j for j in double.jobs.values()
                }
                assert len(double.jobs) == len(by_ours) == 8  # not one job created twice
                uploads = [f for f in double.files.values() if f["purpose"] == "fine-tune"]
                assert len(uploads) == 1
                for job in jobs:
                    there = by_ours[job["id"]]
                    assert job["status"] == there.body["status"] == "succeeded"
                    assert job["fine_tuned_model"] == there.body["fine_tuned_model"]
                    # Each of the provider's events once, in its order.
                    expected = [(e["id"], e["message"]) for e in there.events]
                    assert await mirrored_events(database, job["id"]) == expected
                    assert len(job["result_files"]) == 1
                files = (
                    await http.get(
                        "/v1/files", headers=headers, params={"purpose": "fine-tune-results"}
                    )
                ).json()["data"]
                assert len(files) == 8
        finally:
            await database.dispose()
            await asyncio.to_thread(stop_server, second)


async def test_a_second_instance_as_provider_trains_and_streams_live(
    tmp_path: Path, tiny_model_dir: Path
):
    """A's job runs on B (the local engine, a tiny model, for real): A's WebSocket subscriber
    sees B's events live, A reports B's fine-tuned model and forwards its completions.

    SQLite only, on both: the databases are not what this test is about (the kill test above
    runs on both), and it trains for real."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    key_a, key_b = secrets.token_hex(20), secrets.token_hex(20)
    env_b = service_env(
        data_dir=str(tmp_path / "b"),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        bootstrap_api_key=key_b,
        models_dir=str(tiny_model_dir.parent),
        worker_poll_seconds="0.2",
        log_level="warning",
    )
    with serve(tmp_path / "b-logs", env_b) as b:
        provider = {
            "name": "gpu",
            "kind": "peer",
            "base_url": b.api_url,
            "api_key": key_b,
            "models": ["tiny-chat"],
        }
        env_a = service_env(
            data_dir=str(tmp_path / "a"),
            database_url=database_url,
            bootstrap_api_key=key_a,
            providers=json.dumps([provider]),
            **FAST,
        )
        with serve(tmp_path / "a-logs", env_a) as a:
            tenant = Tenant(project_id="", key=key_a)
            async with httpx.AsyncClient(base_url=a.url, timeout=60) as http:
                models = (await http.get("/v1/models", headers=tenant.headers)).json()["data"]
                assert "tiny-chat" in [m["id"] for m in models]
                training = await _upload(http, key_a, chat_file(12))
                created = (
                    await http.post(
                        "/v1/fine_tuning/jobs",
                        headers=tenant.headers,
                        json={
                            "model": "tiny-chat",
                            "training_file": training,
                            "suffix": "peer",
                            "method": job_method(
                                n_epochs=1, batch_size=4, learning_rate_multiplier=50
                            ),
                        },
                    )
                ).json()
                stream_url = (
                    a.url.replace("http://", "ws://")
                    + f"/v1/fine_tuning/jobs/{created['id']}/events/stream"
                )
                received: list[dict[str, Any]] = []
                async with connect(stream_url, additional_headers=tenant.headers) as ws:
                    try:
                        while True:
                            received.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
                    except ConnectionClosed:
                        assert ws.close_code == 1000, (ws.close_code, a.stderr())
                job = (
                    await http.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=tenant.headers)
                ).json()
                assert job["status"] == "succeeded", (job, a.stderr(), b.stderr())
                assert job["fine_tuned_model"].startswith("ft:tiny-chat:personal:peer:")

                # B's log, as B lists it, arrived on A's stream: metrics steps included.
                async with httpx.AsyncClient(base_url=b.url, timeout=30) as b_http:
                    b_jobs = (
                        await b_http.get(
                            "/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {key_b}"}
                        )
                    ).json()
                    (b_job,) = b_jobs["data"]
                    assert b_job["metadata"]["ft_job_id"] == created["id"]
                    b_events = await _events(b_http, key_b, b_job["id"])
                streamed = [m["event"]["message"] for m in received if m["type"] == "event"]
                for event in b_events:
                    assert streamed.count(event["message"]) >= 1, event["message"]
                assert any(
                    m["type"] == "event" and m["event"]["type"] == "metrics" for m in received
                )

                reply = await http.post(
                    "/v1/chat/completions",
                    headers=tenant.headers,
                    json={
                        "model": job["fine_tuned_model"],
                        "max_tokens": 8,
                        "temperature": 0,
                        "messages": [{"role": "user", "content": "Remercie Mme Durand."}],
                    },
                )
                assert reply.status_code == 200, reply.text
                assert reply.json()["model"] == job["fine_tuned_model"]
                assert reply.json()["usage"]["completion_tokens"] >= 1
