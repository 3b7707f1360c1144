"""Upstream calls per active job per minute, with and without provider webhooks.

The service (served by uvicorn in this process, SQLite, default sync intervals: 5 s while a job
runs upstream, 30 s while it is queued there) runs N jobs on the OpenAI-wire double of
tests/upstream, which moves each job one tick every `--tick` seconds (validating, queued, then
`--steps` training steps over three epochs, a checkpoint at each epoch's end). Every request the
double receives is counted. For each mode the
script reports the calls per active job-minute (from the job's creation here to its final status
here), the calls by kind, and how long after the provider finished a job the service knew it.

    .venv/bin/python bench/upstream_calls.py [--quick] [--jobs 10] [--tick 5] [--steps 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import default_result_path, machine_facts, percentile, write_result  # noqa: E402

WEBHOOK_SECRET = "whsec_" + "YmVuY2htYXJrLXdlYmhvb2stc2VjcmV0LTEyMzQ1"
FINAL = ("succeeded", "failed", "cancelled")


def _kind(path: str) -> str:
    """A request's kind, without ids: `GET /v1/fine_tuning/jobs/{id}/events`."""
    method, url = path.split(" ", 1)
    parts = ["{id}" if part.startswith(("ftjob-", "file-")) else part for part in url.split("/")]
    return f"{method} {'/'.join(parts)}"


async def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run `args.jobs` jobs through the double; count its calls."""
    import httpx

    from service.app import create_app
    from service.db import upgrade
    from service.projects import service as projects
    from service.server import ServiceServer, server_config
    from service.settings import ProviderSettings, Settings
    from tests.processes import free_port
    from tests.upstream.openai_double import OpenAIDouble

    port = free_port()
    webhooks = mode == "webhooks"
    double = OpenAIDouble(
        steps=args.steps,
        checkpoint_every=max(1, args.steps // 3),  # three epochs: a checkpoint at each end
        webhook_url=f"http://127.0.0.1:{port}/v1/webhooks/openai" if webhooks else None,
        webhook_secret=WEBHOOK_SECRET if webhooks else None,
    )
    provider = ProviderSettings.model_validate({
        "name": "openai", "base_url": double.url, "api_key": double.api_key,
        "models": [{"id": "gpt-4o-mini", "shutdown_date": "2099-12-31",
                    "training_cutoff": "2099-12-01"}],
        **({"webhook_secret": WEBHOOK_SECRET} if webhooks else {}),
    })
    scale = args.interval_scale
    settings = Settings(  # type: ignore[call-arg]
        data_dir=work / mode, database_url=f"sqlite+aiosqlite:///{work / mode / 'db.sqlite'}",
        embedded_worker=False, packaged_models=False, providers=[provider],
        upstream_sync_running_seconds=5.0 * scale, upstream_sync_queued_seconds=30.0 * scale,
        upstream_sync_paused_seconds=120.0 * scale, _env_file=None,
    )
    (work / mode).mkdir(parents=True, exist_ok=True)
    await upgrade(settings.database_url)
    app = create_app(settings)
    config = server_config(app, host="127.0.0.1", port=port, log_level="warning")
    server = ServiceServer(config, app)
    async with double:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        async with app.state.database.session() as session:
            project = await projects.create_project(session=session, name="bench")
            key = (await projects.create_api_key(
                session=session, project=project, name="bench", admin=False)).value
        headers = {"Authorization": f"Bearer {key}"}
        lines = "".join(json.dumps({"messages": [
            {"role": "user", "content": f"Merci pour la commande {i}."},
            {"role": "assistant", "content": "Bonjour, merci pour votre commande."}]}) + "\n"
            for i in range(10))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            uploaded = await http.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                                       files={"file": ("emails.jsonl", lines.encode())})
            file_id = uploaded.json()["id"]
            created: dict[str, float] = {}
            for _ in range(args.jobs):
                job = (await http.post("/v1/fine_tuning/jobs", headers=headers, json={
                    "model": "gpt-4o-mini", "training_file": file_id})).json()
                created[job["id"]] = time.monotonic()
            double.tick_every(args.tick)
            known: dict[str, float] = {}
            while len(known) < args.jobs:
                for job_id in created:
                    if job_id in known:
                        continue
                    job = (await http.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers)).json()
                    if job["status"] in FINAL:
                        known[job_id] = time.monotonic()
                await asyncio.sleep(0.1)
        calls: Counter[str] = Counter()
        for path, count in double.calls.items():
            calls[_kind(path)] += count
        by_ours = {(j.body.get("metadata") or {}).get("ft_job_id"): j.body["id"]
                   for j in double.jobs.values()}
        lags = [known[ours] - double.finished[by_ours[ours]] for ours in created]
        active_minutes = sum(known[j] - created[j] for j in created) / 60
        server.should_exit = True
        await serving
    total = sum(calls.values())
    return {
        "calls": total,
        "active_job_minutes": round(active_minutes, 3),
        "calls_per_active_job_minute": round(total / active_minutes, 2),
        "calls_by_kind": dict(calls.most_common()),
        "known_after_provider_finished_s": {
            "p50": round(percentile(sorted(lags), 50), 3),
            "max": round(max(lags), 3),
            "each": [round(lag, 3) for lag in lags],
        },
        "job_minutes_each": round(active_minutes / args.jobs, 3),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Both modes, one after the other."""
    with tempfile.TemporaryDirectory() as folder:
        return {mode: await run_mode(mode, args, Path(folder)) for mode in ("polling", "webhooks")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and fast (seconds)")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--tick", type=float, default=5.0, help="seconds per step at the double")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--interval-scale", type=float, default=1.0,
                        help="multiplies the service's default sync intervals")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.tick, args.steps, args.interval_scale = 3, 0.2, 4, 0.1
    started = time.time()
    results = asyncio.run(main(args))
    result = {
        "machine": machine_facts(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_s": round(time.time() - started, 1),
        "modes": results,
    }
    path = write_result(args.out or default_result_path("upstream_calls", quick=args.quick), result)
    for mode, figures in results.items():
        lag = figures["known_after_provider_finished_s"]
        print(f"{mode}: {figures['calls_per_active_job_minute']} calls per active job-minute; "
              f"final status known {lag['p50']:.2f} s (p50) / {lag['max']:.2f} s (max) after the "
              "provider's")
    print(f"written to {path}")
