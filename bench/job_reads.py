"""Latency of job reads through the real app: GET one job, list pages, at 1,000 and 100,000 jobs.

Usage: .venv/bin/python bench/job_reads.py [--quick] [--sizes 1000,100000] [--no-postgres]
                                            [--quiet-wait S] [--out PATH]

For each backend (SQLite file in a temporary folder; PostgreSQL when reachable at
$FT_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test, in a scratch database
ft_bench_<pid> dropped at the end) and each size N: migrate with service.db.upgrade, create
projects A and B and a key of A (service.projects.service), bulk-insert N jobs for A and N for B
interleaved (rows of service.jobs.models.Job, not through the API), then drive create_app in-process
through httpx.ASGITransport with its lifespan running. Timed, sequentially, after a warm-up:
  get_job              GET /v1/fine_tuning/jobs/{id}, ids of A drawn at random
  list_first_page      GET /v1/fine_tuning/jobs?limit=20
  list_deep_page       GET /v1/fine_tuning/jobs?limit=20&after=<A's job 90% of the way down>
  extra: list_metadata_match / list_metadata_nomatch   ?metadata[team]=<common | absent value>
Each figure: p50/p95/p99/mean/max in ms and requests/s (one client, one request at a time).
Also recorded: the SQL each request runs, its plan (EXPLAIN QUERY PLAN on SQLite, EXPLAIN
ANALYZE on PostgreSQL) and the SQL alone timed on a bare connection.
Writes bench/results/job_reads.json (--quick: job_reads.quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    CpuMeter,
    default_result_path,
    latency_summary,
    machine_facts,
    wait_for_quiet,
    write_result,
)

from service.app import create_app  # noqa: E402
from service.db import Database, upgrade  # noqa: E402
from service.jobs.models import Job  # noqa: E402
from service.projects import service as projects  # noqa: E402
from service.settings import Settings  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "FT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
INSERT_BATCH = 5_000
SEED = 20260101
_ALPHABET = string.ascii_letters + string.digits
BASES = ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14"]
STATUSES = ["succeeded", "failed", "cancelled", "running", "queued", "validating_files"]
STATUS_WEIGHTS = [75, 12, 8, 2, 2, 1]
TEAMS = ["sales", "support", "legal", "hr", "marketing"]


# --- data --------------------------------------------------------------------------------------


def _rid(rng: random.Random, prefix: str, n: int = 24) -> str:
    return prefix + "".join(rng.choices(_ALPHABET, k=n))


def _job_row(rng: random.Random, project_id: str, created_at: int) -> dict[str, Any]:
    """One realistic job row, keyed by column name (the `metadata_` attribute is `metadata`)."""
    base = rng.choice(BASES)
    status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
    kind = "dpo" if rng.random() < 0.15 else "supervised"
    terminal = status in ("succeeded", "failed", "cancelled")
    hyper: dict[str, Any] = {"batch_size": "auto", "learning_rate_multiplier": "auto",
                             "n_epochs": "auto"}
    if status in ("succeeded", "running") or (terminal and rng.random() < 0.5):
        hyper = {"batch_size": rng.choice([1, 2, 4, 8]),
                 "learning_rate_multiplier": rng.choice([0.5, 1.0, 1.8, 2.0]),
                 "n_epochs": rng.randint(1, 6)}
    if kind == "dpo":
        hyper["beta"] = 0.1
    suffix = rng.choice([None, "support-fr", "emails-en", "relances", "devis"])
    finished_at = created_at + rng.randint(600, 20_000) if terminal else None
    error = None
    if status == "failed":
        error = {"code": "invalid_training_file", "param": "training_file",
                 "message": "The training file has 3 examples with errors; see line 12."}
    metadata = None
    if rng.random() < 0.3:
        metadata = {"team": rng.choice(TEAMS), "ticket": f"TCK-{rng.randint(1000, 9999)}"}
    fine_tuned = None
    if status == "succeeded":
        fine_tuned = f"ft:{base}:personal:{suffix or ''}:{_rid(rng, '', 8)}"
    return {
        "id": _rid(rng, "ftjob-"),
        "project_id": project_id,
        "created_at": created_at,
        "updated_at": finished_at or created_at + 5,
        "model": base,
        "base_model": base,
        "engine": "upstream",
        "organization_id": "org-personal",
        "training_file": _rid(rng, "file-"),
        "validation_file": _rid(rng, "file-") if rng.random() < 0.3 else None,
        "status": status,
        "method": {"type": kind, kind: {"hyperparameters": hyper}},
        "seed": rng.randint(0, 2_147_483_647),
        "suffix": suffix,
        "metadata": metadata,
        "integrations": None,
        "error": error,
        "fine_tuned_model": fine_tuned,
        "finished_at": finished_at,
        "trained_tokens": rng.randint(50_000, 90_000_000) if status == "succeeded" else None,
        "estimated_finish": created_at + 3600 if status == "running" else None,
        "result_files": [_rid(rng, "file-")] if status == "succeeded" else [],
        "event_seq": rng.randint(2, 40),
        "lease_owner": "worker-1" if status == "running" else None,
        "lease_expires_at": None,
        "attempts": 1 if status != "validating_files" else 0,
    }


async def _insert_jobs(database: Database, a: str, b: str, n: int) -> list[str]:
    """Insert n jobs for each project, alternating, oldest first; return A's ids, oldest first."""
    rng = random.Random(SEED + n)
    table = Job.__table__  # type: ignore[attr-defined]
    start = int(time.time()) - 2 * n * 60  # one job a minute, ending now
    ids_a: list[str] = []
    batch: list[dict[str, Any]] = []
    async with database.engine.begin() as conn:
        for i in range(2 * n):
            row = _job_row(rng, a if i % 2 == 0 else b, start + i * 60)
            if i % 2 == 0:
                ids_a.append(row["id"])
            batch.append(row)
            if len(batch) >= INSERT_BATCH:
                await conn.execute(sa.insert(table), batch)
                batch = []
        if batch:
            await conn.execute(sa.insert(table), batch)
    return ids_a


# --- SQL capture and plans ---------------------------------------------------------------------


class _Capture:
    """Records the statements the app sends while `on` is set."""

    def __init__(self) -> None:
        self.on = False
        self.statements: list[tuple[str, Any]] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any,
                 _context: Any, _executemany: bool) -> None:
        if self.on:
            self.statements.append((statement, parameters))


async def _plans(database: Database, statements: list[tuple[str, Any]],
                 postgres: bool) -> list[dict[str, Any]]:
    """EXPLAIN each captured statement and time it alone on a bare connection."""
    out = []
    async with database.engine.connect() as conn:
        for statement, parameters in statements:
            params = tuple(parameters) if parameters is not None else ()
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
            rows = (await conn.exec_driver_sql(prefix + statement, params)).all()
            if postgres:
                plan = [r[0] for r in rows]
            else:
                plan = [" " * (3 * _depth(rows, r)) + str(r[-1]) for r in rows]
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                (await conn.exec_driver_sql(statement, params)).all()
                times.append(time.perf_counter() - t0)
            out.append({
                "sql": " ".join(statement.split()),
                "parameters": [str(p) for p in params],
                "plan": plan,
                "sql_alone_median_ms": round(statistics.median(times) * 1000, 3),
            })
    return out


def _depth(rows: Sequence[Any], row: Any) -> int:
    # EXPLAIN QUERY PLAN rows are (id, parent, notused, detail): indent by nesting.
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent:
        depth += 1
        parent = parents.get(parent, 0)
    return depth


# --- one scenario ------------------------------------------------------------------------------


async def _timed(client: httpx.AsyncClient, urls: Sequence[str], headers: dict[str, str],
                 check: Callable[[httpx.Response], None]) -> list[float]:
    latencies = []
    for url in urls:
        t0 = time.perf_counter()
        response = await client.get(url, headers=headers)
        latencies.append(time.perf_counter() - t0)
        check(response)
    return latencies


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")


async def scenario(backend: str, url: str, n: int, tmp: Path, counts: dict[str, int],
                   warmup: int, quiet_wait: float) -> dict[str, Any]:
    """Fill a fresh database with 2n jobs and time the reads; return the figures."""
    postgres = backend == "postgresql"
    started = time.perf_counter()
    await upgrade(url)
    database = Database(url)
    try:
        async with database.session() as session:
            project_a = await projects.create_project(session=session, name="bench-a")
            project_b = await projects.create_project(session=session, name="bench-b")
            key = await projects.create_api_key(
                session=session, project=project_a, name="bench", admin=False
            )
            a_id, b_id = project_a.id, project_b.id
        t0 = time.perf_counter()
        ids_a = await _insert_jobs(database, a_id, b_id, n)
        insert_s = time.perf_counter() - t0
        if postgres:
            # What autovacuum would do shortly after a bulk load: statistics, visibility map.
            async with database.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE fine_tuning_jobs")
        # One of B's ids, for the cross-project check.
        async with database.engine.connect() as conn:
            b_job = (await conn.execute(
                sa.select(Job.__table__.c.id).where(Job.__table__.c.project_id == b_id).limit(1)  # type: ignore[attr-defined]
            )).scalar_one()
    finally:
        await database.dispose()

    rng = random.Random(SEED)
    get_ids = (rng.sample(ids_a, counts["get_job"]) if len(ids_a) >= counts["get_job"]
               else rng.choices(ids_a, k=counts["get_job"]))
    deep_after = ids_a[len(ids_a) // 10]  # 90% of the way down the newest-first list
    paths = {
        "get_job": [f"/v1/fine_tuning/jobs/{i}" for i in get_ids],
        "list_first_page": ["/v1/fine_tuning/jobs?limit=20"] * counts["list"],
        "list_deep_page": [f"/v1/fine_tuning/jobs?limit=20&after={deep_after}"] * counts["list"],
        "list_metadata_match": ["/v1/fine_tuning/jobs?limit=20&metadata[team]=sales"]
        * counts["metadata"],
        "list_metadata_nomatch": ["/v1/fine_tuning/jobs?limit=20&metadata[team]=nobody"]
        * counts["metadata"],
    }
    headers = {"Authorization": f"Bearer {key.value}"}
    settings = Settings(data_dir=tmp / f"data-{backend}-{n}", database_url=url)
    app = create_app(settings)
    results: dict[str, Any] = {}
    sql: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        database = app.state.database
        capture = _Capture()
        sa.event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            # Correctness first: a figure for a broken endpoint is worth nothing.
            first = (await client.get(paths["list_first_page"][0], headers=headers)).json()
            assert len(first["data"]) == min(20, n) and first["has_more"] == (n > 20), first
            assert first["data"][0]["id"] == ids_a[-1], "newest first"
            deep = (await client.get(paths["list_deep_page"][0], headers=headers)).json()
            assert deep["data"][0]["id"] == ids_a[len(ids_a) // 10 - 1], "page after the cursor"
            other = await client.get(f"/v1/fine_tuning/jobs/{b_job}", headers=headers)
            assert other.status_code == 404, "another project's job must be invisible"

            for name, urls in paths.items():
                capture.statements.clear()
                capture.on = True
                _ok(await client.get(urls[0], headers=headers))
                capture.on = False
                statements = list(capture.statements)
                await _timed(client, (urls * warmup)[:warmup], headers, _ok)
                quiet = wait_for_quiet(quiet_wait)
                with CpuMeter() as meter:
                    latencies = await _timed(client, urls, headers, _ok)
                results[name] = {
                    **latency_summary(latencies),
                    "sql_statements_per_request": len(statements),
                    # CPU of this process (client + app + driver); the database server's own
                    # work shows in other_busy_s on PostgreSQL, with anyone else's.
                    "process_cpu_s": meter.cpu_s and round(meter.cpu_s, 3),
                    "other_busy_s": meter.other_busy_s,
                    **quiet,
                }
                sql[name] = statements
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
        plans = {}
        for name, statements in sql.items():
            # The key lookup is the same for every request; plan it once, under get_job.
            wanted = [s for s in statements if "fine_tuning_jobs" in s[0] or name == "get_job"]
            plans[name] = await _plans(database, wanted, postgres)
    return {
        "backend": backend,
        "n_jobs_per_project": n,
        "n_jobs_total": 2 * n,
        "insert_s": round(insert_s, 2),
        "setup_s": round(time.perf_counter() - started, 2),
        "latency": results,
        "sql": plans,
    }


# --- PostgreSQL scratch database ---------------------------------------------------------------


def _postgres_admin(sql: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _postgres_probe() -> tuple[str | None, str | None]:
    """Return (server version, None) when PostgreSQL answers, else (None, why not)."""
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return (str(row[0]) if row else "unknown"), None
    except psycopg.Error as exc:
        return None, f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}".strip()


def _postgres_url(name: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [200] if args.quick else [1_000, 100_000])
    counts = ({"get_job": 100, "list": 50, "metadata": 20} if args.quick
              else {"get_job": 500, "list": 200, "metadata": 50})
    warmup = 10 if args.quick else 50
    pg_version, pg_note = (None, "skipped (--no-postgres)") if args.no_postgres else (
        _postgres_probe())
    backends = ["sqlite"] + (["postgresql"] if pg_version else [])
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in backends:
            for n in sizes:
                if backend == "sqlite":
                    url = f"sqlite+aiosqlite:///{tmp / f'jobs-{n}.db'}"
                    result = await scenario(backend, url, n, tmp, counts, warmup,
                                            args.quiet_wait)
                    Path(url.split("///", 1)[1]).unlink()
                else:
                    name = f"ft_bench_{os.getpid()}"
                    _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    _postgres_admin(f'CREATE DATABASE "{name}"')
                    try:
                        result = await scenario(backend, _postgres_url(name), n, tmp, counts,
                                                warmup, args.quiet_wait)
                    finally:
                        _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                scenarios.append(result)
                _print_scenario(result)
    return {
        "sizes": sizes,
        "counts": counts,
        "warmup": warmup,
        "postgresql": {"server_version": pg_version, "note": pg_note,
                       "url": POSTGRES_ADMIN_URL if pg_version else None},
        "scenarios": scenarios,
    }


def _print_scenario(result: dict[str, Any]) -> None:
    print(f"{result['backend']:10s} {result['n_jobs_per_project']:>7,} jobs/project "
          f"(insert {result['insert_s']} s)", flush=True)
    for name, figures in result["latency"].items():
        print(f"  {name:22s} p50 {figures['p50_ms']:7.2f}  p95 {figures['p95_ms']:7.2f}  "
              f"p99 {figures['p99_ms']:7.2f} ms  {figures['requests_per_s']:7.1f} req/s  "
              f"({figures['sql_statements_per_request']} SQL; load before "
              f"{_pct(figures['load_before'])})", flush=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 jobs, few requests: smoke test")
    parser.add_argument("--sizes", help="comma-separated jobs per project (default 1000,100000)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quiet-wait", type=float, help="before each timed series, wait up to "
                        "this many seconds for other processes to leave the CPUs idle "
                        "(default 15; quick 0)")
    args = parser.parse_args()
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 15.0
    out = args.out or default_result_path("job_reads", quick=args.quick)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    figures = asyncio.run(run(args))
    report = {
        "benchmark": "job_reads",
        "machine": machine_facts(),
        "parameters": {
            "quick": args.quick,
            "sizes_jobs_per_project": figures.pop("sizes"),
            "requests": figures.pop("counts"),
            "warmup_requests": figures.pop("warmup"),
            "projects": "A (the caller) and B each hold N jobs, inserted alternately",
            "client": "httpx.AsyncClient over ASGITransport, in-process, sequential",
            "postgres_after_load": "VACUUM ANALYZE fine_tuning_jobs (as autovacuum would)",
            "sqlite_after_load": "nothing (no ANALYZE, as in production)",
            "quiet_wait_s": args.quiet_wait,
        },
        **figures,
        "total_bench_s": round(time.perf_counter() - started, 1),
    }
    write_result(out, report)
    if report["postgresql"]["note"]:
        print(f"note: {report['postgresql']['note']}")
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
