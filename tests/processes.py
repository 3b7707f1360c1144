"""Run `python -m service ...` as a real process: the command line, and the server on a port."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
# The project's shared folder (reference texts, sample emails) sits beside the repository.
SHARED_DIR = REPO_ROOT.parent / "shared"
# Generous: a loaded 2-core machine has taken over 20 s to import torch and migrate.
STARTUP_TIMEOUT = 60.0


def service_env(**settings: str) -> dict[str, str]:
    """Return this process's environment without any FT_* variable, plus `FT_<NAME>` settings.

    Packaged models are off unless asked for: converting them takes about 30 s at start-up.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    settings.setdefault("packaged_models", "0")
    env.update({f"FT_{name.upper()}": value for name, value in settings.items()})
    return env


def keyed_env(
    data_dir: Path, database_url: str, models_dir: Path, **settings: str
) -> tuple[dict[str, str], str]:
    """A server's environment on `data_dir`, the database and the models, with a new admin key
    (FT_BOOTSTRAP_API_KEY creates it at start-up); return the environment and the key."""
    key = secrets.token_hex(20)
    env = service_env(
        data_dir=str(data_dir),
        database_url=database_url,
        bootstrap_api_key=key,
        models_dir=str(models_dir),
        **settings,
    )
    return env, key


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m service <args>` with the venv's interpreter and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    """Return a TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    """A running `python -m service serve`."""

    url: str
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"the server exited with {server.process.returncode}:\n{server.stderr()}"
            )
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server did not answer /healthz in time:\n{server.stderr()}")


def _raise_if_dead(server: Server, cause: Exception | None = None) -> None:
    if server.process.poll() is not None:
        raise AssertionError(
            f"the server died during the test ({server.process.returncode}):\n{server.stderr()}"
        ) from cause


def start_server(log_dir: Path, env: dict[str, str]) -> Server:
    """Start the real server on a free port and wait until it is healthy (stop it yourself).

    Its output goes to files rather than pipes, so a chatty server can never block on a full pipe.
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = log_dir / "server.out", log_dir / "server.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, stderr_path=stderr_path)
    try:
        _wait_until_healthy(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 10 s); nothing if it is dead already."""
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def serve(log_dir: Path, env: dict[str, str]) -> Iterator[Server]:
    """Start the real server, yield it, and stop it afterwards; it must not die meanwhile."""
    server = start_server(log_dir, env)
    try:
        try:
            yield server
        except Exception as error:
            _raise_if_dead(server, cause=error)
            raise
        _raise_if_dead(server)
    finally:
        stop_server(server)


@contextmanager
def serve_keyed(
    root: Path, database_url: str, models_dir: Path, **settings: str
) -> Iterator[tuple[Server, str]]:
    """`serve` on `keyed_env` under `root` (data/ and server/ inside): the server and its key."""
    env, key = keyed_env(root / "data", database_url, models_dir, **settings)
    with serve(root / "server", env) as server:
        yield server, key
