"""Shared helpers for the benchmarks: machine facts, summary statistics and result files.

Every benchmark writes one JSON file under bench/results/ holding `machine` (from `machine_facts`),
`parameters` and its numbers, so that a figure quoted anywhere can be traced to a run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

DEFAULT_PACKAGES = (
    "tiktoken",
    "fastapi",
    "starlette",
    "pydantic",
    "sqlalchemy",
    "sqlmodel",
    "aiosqlite",
    "asyncpg",
    "psycopg",
    "alembic",
    "httpx",
)


def package_versions(names: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Return the installed version of each package (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_facts(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """Return what a reader needs to compare two runs: machine, interpreter, versions, code."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    dirty = _git("status", "--porcelain", "--", "service")
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": usable,
        "memory_total_mib": _memory_mib(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(packages),
        "git_commit": _git("rev-parse", "HEAD"),
        # The service is edited in parallel: say whether the measured code differs from HEAD.
        "service_dirty": bool(dirty) if dirty is not None else None,
    }


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)


def current_rss_mib() -> float | None:
    """Return this process's current resident set size in MiB (Linux only)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _machine_busy_s() -> float | None:
    """Return the CPU seconds all processes have used since boot (busy time of every CPU)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields]
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Measures a timed region: wall time, this process's CPU time and everyone else's.

    The machine may be shared (other people's tests or benchmarks): `other_busy_s` is the CPU
    time that other processes used during the region, and `contention` that time as a fraction
    of what all CPUs could have given, so a reader can tell a clean run from a contended one.
    """

    def __enter__(self) -> CpuMeter:
        self._busy = _machine_busy_s()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = usage.ru_utime + usage.ru_stime
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_s = usage.ru_utime + usage.ru_stime - self._cpu
        busy = _machine_busy_s()
        self.other_busy_s: float | None = None
        self.contention: float | None = None
        if busy is not None and self._busy is not None:
            self.other_busy_s = max(0.0, busy - self._busy - self.cpu_s)
            capacity = (os.cpu_count() or 1) * self.wall_s
            self.contention = round(self.other_busy_s / capacity, 3) if capacity else None

    def as_dict(self) -> dict[str, float | None]:
        """Return the measurements (seconds; contention as a fraction of all CPUs)."""
        return {
            "wall_s": self.wall_s,
            "cpu_s": round(self.cpu_s, 3),
            "other_busy_s": None if self.other_busy_s is None else round(self.other_busy_s, 2),
            "contention": self.contention,
        }


def machine_load(window_s: float = 0.5) -> float | None:
    """Return the fraction of all CPUs that were busy over the next `window_s` seconds."""
    before = _machine_busy_s()
    time.sleep(window_s)
    after = _machine_busy_s()
    if before is None or after is None:
        return None
    return round((after - before) / ((os.cpu_count() or 1) * window_s), 3)


def wait_for_quiet(
    max_wait_s: float, threshold: float = 0.15, window_s: float = 0.5
) -> dict[str, float | None]:
    """Wait (at most `max_wait_s`) until other processes leave the CPUs mostly idle.

    The machine may be shared; a run started while someone's test suite saturates the CPUs
    measures them, not us. Returns how long we waited and the last load seen (fraction of all
    CPUs, measured while this process slept), which the result files record next to each run.
    """
    started = time.perf_counter()
    # Without waiting, one short sample still tells a reader how busy the machine was.
    load = machine_load(window_s if max_wait_s > 0 else 0.2)
    while load is not None and load > threshold and time.perf_counter() - started < max_wait_s:
        load = machine_load(window_s)
    return {"waited_s": round(time.perf_counter() - started, 1), "load_before": load}


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Return median, min and max of repeated measurements."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation, as numpy's default does."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """Summarise sequential request latencies: p50/p95/p99/mean/max in ms and requests/s."""
    ordered = sorted(seconds)
    total = sum(seconds)
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(ordered, 50) * 1000, 3),
        "p95_ms": round(percentile(ordered, 95) * 1000, 3),
        "p99_ms": round(percentile(ordered, 99) * 1000, 3),
        "mean_ms": round(total / len(seconds) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "requests_per_s": round(len(seconds) / total, 1) if total else math.inf,
    }


def write_result(path: Path, result: dict[str, Any]) -> Path:
    """Write a result file (pretty JSON, keys in insertion order) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path


def default_result_path(name: str, *, quick: bool) -> Path:
    """Return bench/results/<name>.json, or <name>.quick.json for a smoke run."""
    return RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")


@contextlib.contextmanager
def served(**settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python -m service serve` on a free port with `FT_<NAME>` settings (no worker, no
    packaged models, warnings only unless given); yield its base URL and process, then stop it."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin"}
    defaults = {"embedded_worker": "0", "packaged_models": "0", "log_level": "warning"}
    env.update({f"FT_{k.upper()}": v for k, v in {**defaults, **settings}.items()})
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)], cwd=ROOT, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=30)
