"""Latency of live job events: engine-side commit to receipt by WebSocket subscribers.

Usage: .venv/bin/python bench/stream_latency.py [--quick] [--subscribers 1,100,1000]
                                                 [--setups sqlite,postgresql] [--events N]
                                                 [--quiet-wait S] [--out PATH]

Each run (one setup, N subscribers) uses fresh processes, all started by this script:
  writer    plays the engine: a job (inserted queued on the `upstream` engine, then claimed and
            started with service.jobs.engine_calls), then one `append_metrics` per step in its
            own session, as the local worker relays a step; it stamps time.monotonic() as soon
            as `append_metrics` returns (the commit is done).
  server    sqlite-1proc: the writer process itself serves create_app with service.server's
            ServiceServer and server_config (uvloop, as `serve` runs it), on a fresh SQLite file,
            and writes through app.state.database, so its commits wake the poller in-process.
            postgresql-2proc: two `python -m service serve` processes (A and B) on a scratch
            database ft_bench_stream_<pid> (dropped at the end); the writer is a third process
            (a worker); the subscribers use B, which learns of commits by LISTEN/NOTIFY.
  client    one process, N WebSocket connections to /v1/fine_tuning/jobs/{id}/events/stream
            (Authorization header), raw asyncio Protocols over websockets' sans-IO
            ClientProtocol on uvloop; it stamps time.monotonic() on entry to data_received.
            It opens one warm-up connection, then N (at most 50 handshakes at a time), and is
            ready when every connection has had the job snapshot and the replay of the log.
CLOCK_MONOTONIC is one clock for every process on Linux: latency = receipt - commit, for each
(subscriber, step). After the client is ready and the server idle for 2 s, the writer logs
warm-up steps (not counted), then the measured steps, 100-200 ms apart (uniform, seeded), which
is longer than a step's fan-out even at 1,000 subscribers, so steps do not overlap (the result
says how many did). Memory per subscriber: the server process's VmRSS after N idle connections
minus before them (after the warm-up connection), divided by N; on sqlite-1proc the server
process is the writer process. On sqlite-1proc the writer also wraps the hub's `publish`
(in its own process, service/ unchanged) to split the latency into commit -> publish (poller)
and publish -> receipt (fan-out and delivery), and records its garbage collections (gc.callbacks)
during the writes: a full (generation 2) collection stops the event loop, and with 1,000
connections it walks every object of every connection.
Also recorded: the first and the last subscriber's receipt of each step, the CPU time of the
server and client processes over the writes, and the client's mean time in data_received (its
own cost, which delays the stamps of the connections it reads after).
Writes bench/results/stream_latency.json (--quick: stream_latency.quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_PACKAGES,
    ROOT,
    default_result_path,
    machine_facts,
    percentile,
    wait_for_quiet,
    write_result,
)

POSTGRES_ADMIN_URL = os.environ.get(
    "FT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PACKAGES = (*DEFAULT_PACKAGES, "uvicorn", "websockets", "uvloop", "httptools")
TARGET_P99_MS = 50.0
WORKER = "bench-worker"
SEED = 20261101
HANDSHAKES_AT_ONCE = 50
SETTLE_S = 2.0
PREFIX = "@@ "  # marks the lines of the children's line protocol on stdout
SETUPS = {"sqlite": "sqlite-1proc", "postgresql": "postgresql-2proc"}


# --- small helpers, used by every process ------------------------------------------------------


def _say(message: dict[str, Any]) -> None:
    """Send one message of the line protocol to the parent."""
    print(PREFIX + json.dumps(message), flush=True)


async def _command() -> dict[str, Any] | None:
    """Read the parent's next command; None when the parent went away (stdin closed)."""
    line = await asyncio.to_thread(sys.stdin.readline)
    return json.loads(line) if line.strip() else None


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `python -m service serve` runs on (uvloop when installed)."""
    from uvicorn.loops.auto import auto_loop_factory

    return auto_loop_factory(use_subprocess=False)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux)."""
    try:
        # The command name may hold spaces: fields are counted after its closing parenthesis.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- client process: N WebSocket subscribers ---------------------------------------------------

STEP = re.compile(rb'"step":(\d+)')
EVENT_PREFIX = b'{"type":"event"'


class _Subscribers:
    """What every connection of the client shares: receipts, counters, the busy time."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.encode()
        self.receipts: list[tuple[int, int, float]] = []
        self.recording = False
        self.busy_s = 0.0
        self.callbacks = 0
        self.unexpected_closes: Counter[str] = Counter()
        self.finishing = False


class _Subscriber:
    """One WebSocket connection: websockets' sans-IO protocol under an asyncio Protocol.

    data_received stamps the time first, then parses; the client does nothing else while the
    steps arrive, so the stamp is when the event loop read the data.
    """

    def __init__(self, index: int, shared: _Subscribers, uri: Any, authorization: str) -> None:
        self.index = index
        self.shared = shared
        self.ws = ClientProtocol(uri, max_size=None)
        self.authorization = authorization
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.last_step = 0
        self.transport: Any = None

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # uvloop's transports do not subclass asyncio.Transport
        request = self.ws.connect()
        request.headers["Authorization"] = self.authorization
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        received = time.monotonic()
        shared = self.shared
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._message(event.data, received)
            elif isinstance(event, Response) and event.status_code != 101 and not self.ready.done():
                self.ready.set_exception(RuntimeError(f"handshake: HTTP {event.status_code}"))
        self._flush()
        shared.callbacks += 1
        shared.busy_s += time.monotonic() - received

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.shared.finishing:
            code = self.ws.close_rcvd.code if self.ws.close_rcvd else None
            self.shared.unexpected_closes[str(code)] += 1
        if not self.ready.done():
            code = self.ws.close_rcvd.code if self.ws.close_rcvd else None
            self.ready.set_exception(RuntimeError(f"closed before ready (code {code}): {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # the messages
    def _message(self, payload: bytes, received: float) -> None:
        if not payload.startswith(EVENT_PREFIX):
            return  # the job snapshot, heartbeats
        if self.ready.done():
            found = STEP.search(payload)
            if found:
                step = int(found[1])
                self.last_step = max(self.last_step, step)
                if self.shared.recording:
                    self.shared.receipts.append((self.index, step, received))
        elif self.shared.marker in payload:
            self.ready.set_result(None)  # snapshot and replay are in

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def close(self) -> None:
        """Start the closing handshake (1000)."""
        if self.transport is not None and not self.transport.is_closing():
            self.ws.send_close(1000)
            self._flush()


async def _open(
    shared: _Subscribers, index: int, args: argparse.Namespace, gate: asyncio.Semaphore
) -> _Subscriber:
    uri = parse_uri(f"ws://{args.host}:{args.port}/v1/fine_tuning/jobs/{args.job_id}/events/stream")
    loop = asyncio.get_running_loop()
    async with gate:
        _, subscriber = await loop.create_connection(
            lambda: _Subscriber(index, shared, uri, f"Bearer {args.key}"), args.host, args.port
        )
        await asyncio.wait_for(subscriber.ready, 120)
    return subscriber


async def _close_all(subscribers: Sequence[_Subscriber]) -> int:
    """Close every connection; return how many had to be aborted."""
    for subscriber in subscribers:
        subscriber.close()
    pending = [s.closed for s in subscribers if not s.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=15)
    aborted = 0
    for subscriber in subscribers:
        if not subscriber.closed.done() and subscriber.transport is not None:
            subscriber.transport.abort()
            aborted += 1
    return aborted


async def client_main(args: argparse.Namespace) -> None:
    """The client process: warm up, connect N, record step receipts, report to a file."""
    _raise_fd_limit(args.subscribers + 256)
    shared = _Subscribers(args.marker)
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    # One connection first: the server's lazy set-up is not charged to the subscribers.
    warm = await _open(shared, -1, args, gate)
    shared.finishing = True
    await _close_all([warm])
    shared.finishing = False
    _say({"warmed": True})
    await _command()
    started = time.perf_counter()
    subscribers = list(
        await asyncio.gather(*(_open(shared, i, args, gate) for i in range(args.subscribers)))
    )
    connect_s = time.perf_counter() - started
    shared.callbacks, shared.busy_s = 0, 0.0  # from here on: the measured phase only
    shared.recording = True
    _say({"ready": True, "connect_s": round(connect_s, 2), "client_rss_kib": _rss_kib(os.getpid())})

    command = await _command()
    last = int(command["last_step"]) if command else 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(s.last_step < last for s in subscribers):
        await asyncio.sleep(0.05)
    shared.recording = False
    incomplete = sum(1 for s in subscribers if s.last_step < last)
    shared.finishing = True
    aborted = await _close_all(subscribers)
    Path(args.receipts).write_text(json.dumps({"receipts": shared.receipts}))
    _say(
        {
            "done": True,
            "incomplete_subscribers": incomplete,
            "unexpected_closes": dict(shared.unexpected_closes),
            "aborted_on_close": aborted,
            "callbacks": shared.callbacks,
            "callback_busy_s": round(shared.busy_s, 4),
        }
    )


# --- writer process: the engine side (and, on sqlite-1proc, the server too) -------------------


async def _running_job(database: Any, name: str) -> tuple[str, str, str]:
    """Create a project, a key and a running upstream job; return key, job id, last event id."""
    from sqlmodel import col, select

    from service.ids import new_id, now
    from service.jobs import engine_calls
    from service.jobs.lifecycle import append_event
    from service.jobs.models import Job, JobEvent
    from service.projects import service as projects

    async with database.session() as session:
        project = await projects.create_project(session=session, name=name)
        key = await projects.create_api_key(
            session=session, project=project, name="bench", admin=False
        )
    async with database.session() as session:
        created = now()
        job = Job(
            id=new_id("ftjob-"),
            project_id=project.id,
            created_at=created,
            updated_at=created,
            model="gpt-4o-mini-2024-07-18",
            base_model="gpt-4o-mini-2024-07-18",
            engine="upstream",
            organization_id="org-personal",
            training_file="file-bench",
            status="queued",
            method={"type": "supervised", "supervised": {"hyperparameters": {}}},
            seed=42,
        )
        session.add(job)
        await session.flush()
        await append_event(session, job, f"Created fine-tuning job: {job.id}")
        await session.commit()
    async with database.session() as session:
        claimed = await engine_calls.claim_next_job(
            session=session, engine="upstream", worker_id=WORKER, lease_seconds=3600
        )
        assert claimed is not None and claimed.id == job.id, "the bench's job must be claimed"
        await engine_calls.start_job(
            session=session,
            job_id=job.id,
            worker_id=WORKER,
            hyperparameters={"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0},
        )
    async with database.session() as session:
        marker = (
            await session.exec(
                select(JobEvent.id)
                .where(JobEvent.job_id == job.id)
                .order_by(col(JobEvent.pk).desc())
            )
        ).first()
    assert marker is not None
    return key.value, job.id, marker


async def _write_steps(
    database: Any, job_id: str, steps: Sequence[int], gaps: Sequence[float], total: int
) -> list[tuple[int, str, float]]:
    """Log each step as the local worker relays it; return (step, event id, commit time)."""
    from service.jobs import engine_calls

    done = []
    for step, gap in zip(steps, gaps, strict=True):
        await asyncio.sleep(gap)
        metrics = {
            "step": step,
            "total_steps": total,
            "train_loss": round(2.5 / (1 + 0.05 * step), 4),
            "train_mean_token_accuracy": round(min(0.99, 0.4 + 0.005 * step), 4),
        }
        async with database.session() as session:
            event = await engine_calls.append_metrics(
                session=session,
                job_id=job_id,
                worker_id=WORKER,
                metrics=metrics,
                estimated_finish=int(time.time()) + (total - step),
            )
            committed = time.monotonic()
        done.append((step, event.id, committed))
    return done


def _watch_gc() -> list[tuple[int, float, float]]:
    """Record each garbage collection of this process: (generation, start, duration)."""
    pauses: list[tuple[int, float, float]] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.monotonic()
        else:
            pauses.append((info["generation"], started[0], time.monotonic() - started[0]))

    gc.callbacks.append(callback)
    return pauses


def _gc_summary(pauses: Sequence[tuple[int, float, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for generation in (0, 1, 2):
        durations = [d for g, _, d in pauses if g == generation]
        out[f"gen{generation}"] = {
            "collections": len(durations),
            "total_ms": round(sum(durations) * 1000, 1),
            "max_ms": round(max(durations, default=0.0) * 1000, 1),
        }
    out["gen2_at"] = [[round(t, 4), round(d * 1000, 1)] for g, t, d in pauses if g == 2]
    return out


async def writer_main(args: argparse.Namespace) -> None:
    """The writer process: set up the job, then write steps when told, until stdin closes."""
    import uvicorn

    from service.app import create_app
    from service.db import Database, upgrade
    from service.server import ServiceServer, server_config
    from service.settings import Settings

    _raise_fd_limit(args.subscribers + 256)
    gc_pauses = _watch_gc()
    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    published: dict[str, float] = {}
    port = None
    hub = None
    if args.serve:
        settings = Settings(
            data_dir=Path(args.data_dir),
            database_url=args.database_url,
            packaged_models=False,
            embedded_worker=False,
            log_level="warning",
        )
        await upgrade(settings.database_url)
        app = create_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = ServiceServer(
            server_config(app, host="127.0.0.1", port=port, log_level="warning"), app
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the server stopped during start-up")
            await asyncio.sleep(0.02)
        database = app.state.database
        hub = app.state.hub
        publish = hub.publish

        def stamped(message: Any) -> None:
            if message.kind == "event" and message.event_id:
                published[message.event_id] = time.monotonic()
            publish(message)

        hub.publish = stamped
    else:
        database = Database(args.database_url)
    try:
        key, job_id, marker = await _running_job(database, f"bench-stream-{os.getpid()}")
        _say({"key": key, "job_id": job_id, "marker": marker, "port": port, "pid": os.getpid()})
        while (command := await _command()) is not None:
            if command["cmd"] == "subscribers":
                count = hub.subscriber_count() if hub is not None else None
                _say({"subscribers": count})
            elif command["cmd"] == "write":
                gc_pauses.clear()
                steps = await _write_steps(
                    database, job_id, command["steps"], command["gaps"], command["total"]
                )
                stamps: dict[str, float | None] = {}
                if args.serve:
                    # The last step may not be published yet when its commit returns.
                    deadline = time.monotonic() + 5
                    while steps[-1][1] not in published and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                    stamps = {s[1]: published.get(s[1]) for s in steps}
                _say({"steps": steps, "published": stamps, "gc": _gc_summary(gc_pauses)})
    finally:
        if server is not None and serving is not None:
            server.should_exit = True
            await serving
        else:
            await database.dispose()


# --- the parent: processes, PostgreSQL, runs ---------------------------------------------------


def _die_with_parent() -> None:
    # Children end if this script is killed outright (no finally runs then).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    env.update({f"FT_{k.upper()}": v for k, v in settings.items()})
    return env


class Child:
    """A process of this run: started with its output in a log file (and our protocol on a pipe).

    `stop` closes its stdin (the line-protocol children then finish), then terminates it, then
    kills it; it is safe to call twice.
    """

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    @classmethod
    async def start(
        cls, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str], piped: bool
    ) -> Child:
        log = log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                stdout=subprocess.PIPE if piped else out,
                stderr=out,
                preexec_fn=_die_with_parent,
                limit=2**24,
            )
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        await self.process.stdin.drain()

    async def receive(self, timeout: float) -> dict[str, Any]:
        """The child's next protocol message; an error with its log if it dies or is late."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(self.process.stdout.readline(), max(left, 0.01))
            except TimeoutError:
                raise RuntimeError(
                    f"{self.name}: no answer in {timeout} s\n{self.tail()}"
                ) from None
            if not line:
                await self.process.wait()
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                )
            text = line.decode(errors="replace")
            if text.startswith(PREFIX):
                message: dict[str, Any] = json.loads(text[len(PREFIX) :])
                return message

    async def stop(self) -> None:
        process = self.process
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 20)
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _serve(name: str, url: str, tmp: Path, key: str) -> tuple[Child, int]:
    """Start `python -m service serve` on a free port and wait for /healthz."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _child_env(
        database_url=url,
        data_dir=str(tmp / f"data-{name}"),
        packaged_models="0",
        embedded_worker="0",
        bootstrap_api_key=key,
        log_level="warning",
    )
    argv = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    child = await Child.start(name, argv, tmp, env, piped=False)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{name} exited:\n{child.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return child, port
            await asyncio.sleep(0.2)
    await child.stop()
    raise RuntimeError(f"{name} did not answer /healthz in 60 s:\n{child.tail()}")


def _postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _postgres_probe() -> tuple[str | None, str | None]:
    """Return (server version, None) when PostgreSQL answers, else (None, why not)."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return (str(row[0]) if row else "unknown"), None
    except psycopg.Error as exc:
        return None, f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}".strip()


def _postgres_url(name: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


def _summary(values_s: Sequence[float]) -> dict[str, float | int]:
    ordered = sorted(values_s)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p90_ms": round(percentile(ordered, 90) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def _figures(
    n: int,
    steps: list[list[Any]],
    measured: set[int],
    receipts: list[list[Any]],
    published: dict[str, float | None],
) -> dict[str, Any]:
    """Latencies per (subscriber, step), and how one step spreads over the subscribers."""
    committed = {int(step): float(t) for step, _, t in steps}
    by_step: dict[int, list[float]] = defaultdict(list)
    latencies = []
    for _, step, received in receipts:
        if step in measured:
            latency = received - committed[step]
            latencies.append(latency)
            by_step[step].append(latency)
    order = sorted(measured)
    overlapping = 0
    for i, step in enumerate(order[:-1]):
        last = max(by_step[step], default=0.0) + committed[step]
        overlapping += last > committed[order[i + 1]]
    figures: dict[str, Any] = {
        "latency": _summary(latencies),
        "expected_receipts": n * len(measured),
        "missing_receipts": n * len(measured) - len(latencies),
        "steps_overlapping_the_next": overlapping,
        # First and last subscriber to receive each step, after its commit.
        "first_receipt": _summary([min(v) for v in by_step.values()]),
        "last_receipt": _summary([max(v) for v in by_step.values()]),
    }
    ids = {int(step): event_id for step, event_id, _ in steps}
    poller = [
        published[ids[s]] - committed[s]  # type: ignore[operator]
        for s in order
        if published.get(ids[s]) is not None
    ]
    if poller:
        stamp = {s: published[ids[s]] for s in order}
        figures["commit_to_publish"] = _summary(poller)
        figures["publish_to_receipt"] = _summary(
            [
                r - stamp[s]  # type: ignore[operator]
                for _, s, r in receipts
                if s in measured and stamp.get(s) is not None
            ]
        )
    return figures


def _gc_figures(
    gc: dict[str, Any], steps: list[list[Any]], measured: set[int], receipts: list[list[Any]]
) -> dict[str, Any]:
    """The server process's collections, and how many steps had a full one in their fan-out."""
    committed = {int(step): float(t) for step, _, t in steps}
    last: dict[int, float] = {}
    for _, step, received in receipts:
        if step in measured:
            last[step] = max(last.get(step, 0.0), received)
    hit = {
        step
        for step, end in last.items()
        for start, _ in gc["gen2_at"]
        if committed[step] <= start <= end
    }
    return {
        **{k: v for k, v in gc.items() if k != "gen2_at"},
        "steps_with_a_gen2_collection_during_fan_out": len(hit),
    }


async def one_run(
    setup: str,
    n: int,
    *,
    tmp: Path,
    params: dict[str, Any],
    pg_url: str | None,
) -> dict[str, Any]:
    """Start the processes of one (setup, N), measure, stop them all; return the figures."""
    run_dir = tmp / f"{setup}-{n}"
    run_dir.mkdir()
    me = [sys.executable, str(Path(__file__).resolve())]
    children: list[Child] = []
    try:
        if setup == "sqlite":
            url = f"sqlite+aiosqlite:///{run_dir / 'x.db'}"
            writer_argv = [
                *me,
                "--role",
                "writer",
                "--serve",
                "--database-url",
                url,
                "--data-dir",
                str(run_dir / "data"),
                "--subscribers",
                str(n),
            ]
        else:
            assert pg_url is not None
            bootstrap = "sk-bench-" + "x" * 32
            server_a, _ = await _serve("server-a", pg_url, run_dir, bootstrap)
            children.append(server_a)
            server_b, port_b = await _serve("server-b", pg_url, run_dir, bootstrap)
            children.append(server_b)
            writer_argv = [
                *me,
                "--role",
                "writer",
                "--database-url",
                pg_url,
                "--subscribers",
                str(n),
            ]
        writer = await Child.start("writer", writer_argv, run_dir, _child_env(), piped=True)
        children.append(writer)
        job = await writer.receive(120)
        server_pid, port = (
            (writer.pid, job["port"]) if setup == "sqlite" else (server_b.pid, port_b)
        )

        receipts_path = run_dir / "receipts.json"
        client_argv = [
            *me,
            "--role",
            "client",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--job-id",
            job["job_id"],
            "--key",
            job["key"],
            "--marker",
            job["marker"],
            "--subscribers",
            str(n),
            "--receipts",
            str(receipts_path),
        ]
        client = await Child.start("client", client_argv, run_dir, _child_env(), piped=True)
        children.append(client)
        await client.receive(120)  # warmed up: one connection opened and closed
        await asyncio.sleep(SETTLE_S)
        rss_before = _rss_kib(server_pid)
        await client.send({"cmd": "connect"})
        ready = await client.receive(600)
        await asyncio.sleep(SETTLE_S)
        rss_after = _rss_kib(server_pid)
        hub_count = None
        if setup == "sqlite":
            await writer.send({"cmd": "subscribers"})
            hub_count = (await writer.receive(30))["subscribers"]
            assert hub_count == n, f"the hub has {hub_count} subscribers, expected {n}"

        quiet = wait_for_quiet(params["quiet_wait_s"])
        rng = random.Random(SEED + n)
        warmup, events = params["warmup_events"], params["events"]
        steps = list(range(1, warmup + events + 1))
        low, high = params["gap_s"]
        gaps = [round(rng.uniform(low, high), 4) for _ in steps]
        cpu = {"server": _cpu_s(server_pid), "client": _cpu_s(client.pid)}
        started = time.perf_counter()
        await writer.send({"cmd": "write", "steps": steps, "gaps": gaps, "total": steps[-1]})
        written = await writer.receive(60 + sum(gaps) * 2)
        await client.send({"cmd": "last", "last_step": steps[-1]})
        done = await client.receive(120)
        wall = time.perf_counter() - started
        cpu_after = {"server": _cpu_s(server_pid), "client": _cpu_s(client.pid)}
        receipts = json.loads(receipts_path.read_text())["receipts"]
        measured = set(steps[warmup:])
        figures = _figures(n, written["steps"], measured, receipts, written["published"])
        if setup == "sqlite":
            figures["server_gc"] = _gc_figures(written["gc"], written["steps"], measured, receipts)
        delta = (rss_after - rss_before) if rss_after and rss_before else None
        return {
            "setup": SETUPS[setup],
            "subscribers": n,
            **figures,
            "memory": {
                "server_rss_before_kib": rss_before,
                "server_rss_after_kib": rss_after,
                "per_subscriber_kib": round(delta / n, 1) if delta is not None else None,
            },
            "connect_all_s": ready["connect_s"],
            "client_rss_kib": ready["client_rss_kib"],
            "hub_subscribers": hub_count,
            "client": {
                "incomplete_subscribers": done["incomplete_subscribers"],
                "unexpected_closes": done["unexpected_closes"],
                "data_received_calls": done["callbacks"],
                "data_received_mean_us": round(
                    done["callback_busy_s"] / max(done["callbacks"], 1) * 1e6, 1
                ),
            },
            # CPU of the server process and of the client over the write phase; each can use
            # at most one core (one event loop), the machine has two.
            "cpu_during_writes": {
                "wall_s": round(wall, 2),
                **{
                    f"{k}_cpu_s": round(cpu_after[k] - v, 2)  # type: ignore[operator]
                    for k, v in cpu.items()
                    if v is not None and cpu_after[k] is not None
                },
            },
            **quiet,
        }
    except Exception:
        for child in children:
            print(f"--- {child.name} log tail ---\n{child.tail()}", file=sys.stderr)
        raise
    finally:
        for child in reversed(children):
            await child.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = (
        [int(s) for s in args.subscribers.split(",")]
        if args.subscribers
        else ([1, 10] if args.quick else [1, 100, 1000])
    )
    setups = [s.strip() for s in args.setups.split(",")]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        raise SystemExit(f"unknown setups: {', '.join(sorted(unknown))}")
    params = {
        "subscribers": counts,
        "warmup_events": 3 if args.quick else 5,
        "events": args.events or (20 if args.quick else 100),
        "gap_s": [0.1, 0.2],
        "quiet_wait_s": args.quiet_wait,
    }
    _raise_fd_limit(max(counts) + 512)
    # SIGTERM ends the run as Ctrl-C does: through the clean-up below (processes, database).
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    pg_version, pg_note = None, None
    if "postgresql" in setups:
        pg_version, pg_note = _postgres_probe()
        if pg_version is None:
            print(f"skipping postgresql-2proc: {pg_note}", flush=True)
            setups.remove("postgresql")
    runs: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="ft-bench-stream-"))
    pg_name = f"ft_bench_stream_{os.getpid()}"
    try:
        for setup in setups:
            pg_url = None
            if setup == "postgresql":
                _postgres_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                _postgres_admin(f'CREATE DATABASE "{pg_name}"')
                pg_url = _postgres_url(pg_name)
                migrate = subprocess.run(
                    [sys.executable, "-m", "service", "migrate"],
                    cwd=ROOT,
                    env=_child_env(database_url=pg_url, data_dir=str(tmp / "migrate")),
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if migrate.returncode != 0:
                    raise RuntimeError(f"migrate failed:\n{migrate.stderr}")
            for n in counts:
                result = await one_run(setup, n, tmp=tmp, params=params, pg_url=pg_url)
                runs.append(result)
                _print_run(result)
            if setup == "postgresql":
                _postgres_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    finally:
        if pg_version is not None:
            with contextlib.suppress(Exception):
                _postgres_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "params": params,
        "postgresql": {
            "server_version": pg_version,
            "note": pg_note,
            "url": POSTGRES_ADMIN_URL if pg_version else None,
        },
        "runs": runs,
    }


def _print_run(result: dict[str, Any]) -> None:
    lat = result["latency"]
    mem = result["memory"]["per_subscriber_kib"]
    extra = ""
    if "commit_to_publish" in result:
        extra = (
            f"  (commit->publish p50 {result['commit_to_publish']['p50_ms']:.1f}, "
            f"publish->receipt p99 {result['publish_to_receipt']['p99_ms']:.1f})"
        )
    print(
        f"{result['setup']:16s} {result['subscribers']:>5,} subs  "
        f"p50 {lat['p50_ms']:7.2f}  p99 {lat['p99_ms']:7.2f}  max {lat['max_ms']:7.2f}  "
        f"mean {lat['mean_ms']:7.2f} ms  n={lat['n']:,}  missing {result['missing_receipts']}  "
        f"{'n/a' if mem is None else f'{mem:.1f}'} KiB/sub{extra}",
        flush=True,
    )


def _print_table(runs: Sequence[dict[str, Any]]) -> None:
    print()
    print("| Setup | Subscribers | p50 ms | p99 ms | max ms | mean ms | samples | KiB/subscriber |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        lat, mem = r["latency"], r["memory"]["per_subscriber_kib"]
        print(
            f"| {r['setup']} | {r['subscribers']:,} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} "
            f"| {lat['max_ms']:.2f} | {lat['mean_ms']:.2f} | {lat['n']:,} | "
            f"{'n/a' if mem is None else f'{mem:.1f}'} |"
        )


def _target(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    at = [r for r in runs if r["setup"] == "sqlite-1proc" and r["subscribers"] == 1000]
    p99 = at[0]["latency"]["p99_ms"] if at else None
    return {
        "what": "p99 <= 50 ms at 1,000 subscribers, sqlite-1proc",
        "p99_ms": p99,
        "met": None if p99 is None else p99 <= TARGET_P99_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 10 subscribers, 20 events")
    parser.add_argument("--subscribers", help="comma-separated counts (default 1,100,1000)")
    parser.add_argument(
        "--setups",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default both)",
    )
    parser.add_argument("--events", type=int, help="measured events per run (default 100)")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (logs, receipts) for inspection",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each run's writes, wait up to "
        "this many seconds for other processes to leave the CPUs idle "
        "(default 15; quick 0)",
    )
    # The children: this same script in another role.
    parser.add_argument("--role", choices=["writer", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job-id", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--marker", help=argparse.SUPPRESS)
    parser.add_argument("--receipts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        args.subscribers = int(args.subscribers or 1)
        role = client_main if args.role == "client" else writer_main
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(role(args))
        return 0

    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 15.0
    out = args.out or default_result_path("stream_latency", quick=args.quick)
    started = time.perf_counter()
    figures = asyncio.run(run(args))
    params = figures.pop("params")
    report = {
        "benchmark": "stream_latency",
        "machine": machine_facts(PACKAGES),
        "parameters": {
            "quick": args.quick,
            "subscribers": params["subscribers"],
            "warmup_events": params["warmup_events"],
            "measured_events": params["events"],
            "gap_between_commits_s": params["gap_s"],
            "stream": "/v1/fine_tuning/jobs/{id}/events/stream (WebSocket, bearer header)",
            "writer": "engine_calls.append_metrics, one session per step (as LocalWorker "
            "relays a step), with estimated_finish; commit time = time.monotonic() "
            "when it returns",
            "client": "1 process, asyncio Protocols over websockets' sans-IO ClientProtocol, "
            "uvloop; receipt time = time.monotonic() on entry to data_received",
            "server": "ServiceServer + server_config (uvloop, websockets-sansio), log level "
            "warning, FT_EVENT_POLL_SECONDS default",
            "handshakes_at_once": HANDSHAKES_AT_ONCE,
            "settle_before_memory_s": SETTLE_S,
            "quiet_wait_s": args.quiet_wait,
        },
        "target": None,
        **figures,
        "total_bench_s": round(time.perf_counter() - started, 1),
    }
    report["target"] = _target(report["runs"])
    write_result(out, report)
    _print_table(report["runs"])
    target = report["target"]
    if target["met"] is not None:
        print(
            f"target {target['what']}: p99 {target['p99_ms']} ms -> "
            f"{'met' if target['met'] else 'MISSED'}"
        )
    if report["postgresql"]["note"]:
        print(f"note: {report['postgresql']['note']}")
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
