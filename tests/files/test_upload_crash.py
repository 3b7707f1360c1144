"""A server killed in the middle of an upload: after a restart nothing of it remains, neither
bytes on disk nor a file row."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx

from tests.processes import serve, service_env, start_server, stop_server

KEY = "sk-admin-upload-crash-0123456789"
BOUNDARY = "----crash-boundary"


def start_upload(url: str, size: int) -> socket.socket:
    """Send the head of a multipart upload of `size` bytes and 1 MiB of it, then stall."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\""
        "\r\nContent-Type: application/jsonl\r\n\r\n"
    ).encode()
    line = b'{"messages": [{"role": "user", "content": "Hi"}, '
    line += b'{"role": "assistant", "content": "Hello"}]}\n'
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        (
            f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(head) + size}\r\n\r\n"
        ).encode()
        + head
        + line * (2**20 // len(line))
    )
    return sock


def wait_for(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_restart_after_kill_9_mid_upload_leaves_nothing(tmp_path: Path):
    data = tmp_path / "data"
    env = service_env(data_dir=str(data), bootstrap_api_key=KEY, embedded_worker="0")
    uploads = data / "files" / "tmp"
    server = start_server(tmp_path / "first", env)
    sock = start_upload(server.url, size=100 * 2**20)
    try:
        wait_for(
            lambda: uploads.is_dir() and any(p.stat().st_size > 0 for p in uploads.iterdir()),
            "the upload to reach the disk",
        )
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        sock.close()
        stop_server(server)
    assert any(uploads.iterdir())  # the crash left its partial upload behind
    with serve(tmp_path / "second", env) as server:
        wait_for(lambda: not any(uploads.iterdir()), "the leftover to be removed", timeout=10)
        listed = httpx.get(
            f"{server.api_url}/files", headers={"Authorization": f"Bearer {KEY}"}
        ).json()
        assert listed["data"] == []
