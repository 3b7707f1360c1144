"""Clients generated from the live `/openapi.json`, with no hand edits, drive the real server:
openapi-python-client (python_steps.py) and openapi-typescript + openapi-fetch compiled with
`tsc --strict` (steps.ts). Each uploads, creates a job with numeric hyperparameters, lists,
retrieves, lists events, cancels and reads a typed 404.

The npm packages are pinned in package-lock.json and installed by `make clients` (which
`make test` runs); the test fails rather than skips without them, so CI cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import SQLITE_ONLY
from tests.factories import chat_file
from tests.processes import REPO_ROOT, Server, serve_keyed

CLIENTS_DIR = REPO_ROOT / "tests" / "clients"
NODE_MODULES = CLIENTS_DIR / "node_modules"
VENV_BIN = Path(sys.executable).parent
MODEL = "tiny-chat"  # tests/tiny_model.py, offered by the local engine from FT_MODELS_DIR
TIMEOUT = 120


@pytest.fixture
def live(database_url: str, tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[Server, str]]:
    """The real server and its admin key; no worker, so a job stays queued until cancelled."""
    with serve_keyed(
        tmp_path, database_url, tiny_model_dir.parent, embedded_worker="0", log_level="warning"
    ) as live:
        yield live


def _document(server: Server, folder: Path) -> Path:
    path = folder / "openapi.json"
    response = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return path


def _run(args: list[str], *, cwd: Path, input: bytes | None = None) -> str:
    # The generator formats its output with ruff, which it looks for on PATH.
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(args, cwd=cwd, input=input, capture_output=True, timeout=TIMEOUT, env=env)
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{output}"
    return output


@SQLITE_ONLY
def test_python_client_generated_from_the_document(live, tmp_path):
    server, key = live
    document = _document(server, tmp_path)
    generator = VENV_BIN / "openapi-python-client"
    output = _run(
        [
            str(generator),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "generated_client"),
        ],
        cwd=tmp_path,
    )
    assert "Warning" not in output, output  # a skipped endpoint or schema is a warning
    steps = [
        sys.executable,
        str(CLIENTS_DIR / "python_steps.py"),
        str(tmp_path),
        "generated_client",
        server.url,
        key,
        MODEL,
    ]
    assert _run(steps, cwd=tmp_path, input=chat_file()).strip() == "ok"


@SQLITE_ONLY
def test_typescript_client_generated_from_the_document(live, tmp_path):
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / ".package-lock.json").exists():
        pytest.fail("Node 20 and the pinned packages are needed: run `make clients`")
    server, key = live
    document = _document(server, tmp_path)
    project = tmp_path / "ts"
    project.mkdir()
    for name in ("steps.ts", "tsconfig.json"):
        shutil.copy(CLIENTS_DIR / name, project / name)
    (project / "package.json").write_text('{"type": "module"}\n')
    (project / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    bin_ = NODE_MODULES / ".bin"
    _run([node, str(bin_ / "openapi-typescript"), str(document), "-o", "schema.d.ts"], cwd=project)
    _run([node, str(bin_ / "tsc"), "--strict", "-p", "tsconfig.json"], cwd=project)
    training = chat_file().decode()
    steps = [node, "out/steps.js", server.url, key, MODEL, training]
    assert _run(steps, cwd=project).strip() == "ok"
