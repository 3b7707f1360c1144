"""A connect storm on the project event stream must not stall other requests.

A real server (`python -m service serve`, SQLite in a temporary folder, no worker) holds a
project with 30 unfinished jobs, each with 40 events (every other one a step's metrics). A prober
reads `GET /v1/fine_tuning/jobs/{id}` one request at a time, every 10 ms, before and during a
storm: 300 WebSocket clients connecting to `/v1/fine_tuning/events/stream` at once, each reading
its 30 job snapshots. Figures: the GET latency (p50/p99/max) alone and during the storm, and how
long the storm took until the last client had every snapshot.

    .venv/bin/python bench/stream_connect_storm.py [--quick] [--clients 300] [--jobs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    default_result_path,
    latency_summary,
    machine_facts,
    served,
    wait_for_quiet,
    write_result,
)
from job_reads import _job_row  # noqa: E402

from service.db import Database, upgrade  # noqa: E402
from service.ids import new_id  # noqa: E402
from service.jobs.models import Job, JobEvent  # noqa: E402
from service.projects import service as projects  # noqa: E402

EVENTS_PER_JOB = 40


async def prepare(url: str, jobs: int) -> tuple[str, str]:
    """Migrate, create a project, its key and its unfinished jobs; return (key, a job id)."""
    await upgrade(url)
    database = Database(url)
    rng = random.Random(5)
    try:
        async with database.session() as session:
            project = await projects.create_project(session=session, name="storm")
            key = await projects.create_api_key(
                session=session, project=project, name="k", admin=False
            )
        start = int(time.time()) - 3600
        rows, events = [], []
        for i in range(jobs):
            row = {**_job_row(rng, project.id, start + i), "status": "running"}
            rows.append(row)
            for seq in range(1, EVENTS_PER_JOB + 1):
                metrics = seq % 2 == 0
                events.append(
                    {
                        "id": new_id("ftevent-"),
                        "job_id": row["id"],
                        "project_id": project.id,
                        "seq": seq,
                        "created_at": start + i + seq,
                        "level": "info",
                        "message": f"Step {seq // 2}/100: training loss=1.0" if metrics else "x",
                        "type": "metrics" if metrics else "message",
                        "data": {"step": seq // 2, "total_steps": 100, "train_loss": 1.0}
                        if metrics
                        else None,
                    }
                )
        async with database.engine.begin() as conn:
            await conn.execute(sa.insert(Job.__table__), rows)  # type: ignore[attr-defined]
            await conn.execute(sa.insert(JobEvent.__table__), events)  # type: ignore[attr-defined]
        return key.value, rows[0]["id"]
    finally:
        await database.dispose()


async def probe(http: httpx.AsyncClient, path: str, stop: asyncio.Event, into: list[float]) -> None:
    """GET `path` every 10 ms until `stop`; append each latency in seconds."""
    while not stop.is_set():
        started = time.perf_counter()
        response = await http.get(path)
        into.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.01)


async def subscriber(url: str, key: str, jobs: int, opened: list[Any], done: list[float]) -> None:
    """Connect, read the snapshots, then stay connected (closed by the caller)."""
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=120)
    opened.append(ws)
    snapshots = 0
    while snapshots < jobs:
        message = json.loads(await ws.recv())
        snapshots += message.get("type") == "job"
    done.append(time.perf_counter())


async def storm(base: str, key: str, job_id: str, clients: int, jobs: int) -> dict[str, Any]:
    """Measure the prober alone, then during the storm."""
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/fine_tuning/jobs/{job_id}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        for _ in range(20):  # warm-up
            await http.get(path)
        alone: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(probe(http, path, stop, alone))
        await asyncio.sleep(3)
        stop.set()
        await task

        during: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(probe(http, path, stop, during))
        await asyncio.sleep(0.2)
        opened: list[Any] = []
        done: list[float] = []
        ws_url = base.replace("http://", "ws://") + "/v1/fine_tuning/events/stream"
        started = time.perf_counter()
        await asyncio.gather(*(subscriber(ws_url, key, jobs, opened, done) for _ in range(clients)))
        storm_s = time.perf_counter() - started
        stop.set()
        await task
        await asyncio.gather(*(ws.close() for ws in opened))
    return {
        "get_alone": latency_summary(alone),
        "get_during_storm": latency_summary(during),
        "storm_seconds": round(storm_s, 3),
        "clients_with_all_snapshots": len(done),
    }


def main() -> int:
    """Run the storm and write bench/results/stream_connect_storm.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--quiet-wait", type=float, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.quiet_wait = 30, 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        url = f"sqlite+aiosqlite:///{work / 'storm.db'}"
        key, job_id = asyncio.run(prepare(url, args.jobs))
        with served(data_dir=str(work), database_url=url) as (base, _):
            wait_for_quiet(args.quiet_wait)
            figures = asyncio.run(storm(base, key, job_id, args.clients, args.jobs))
    result = {
        "benchmark": "stream_connect_storm",
        "machine": machine_facts(),
        "parameters": {
            "clients": args.clients,
            "jobs": args.jobs,
            "events_per_job": EVENTS_PER_JOB,
            "database": "sqlite",
            "quick": args.quick,
        },
        "results": figures,
    }
    path = write_result(
        args.out or default_result_path("stream_connect_storm", quick=args.quick), result
    )
    during = figures["get_during_storm"]
    print(
        f"GET p99 {during['p99_ms']} ms during {args.clients} connections "
        f"(alone {figures['get_alone']['p99_ms']} ms); storm {figures['storm_seconds']} s ->",
        path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
