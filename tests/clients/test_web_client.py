"""The TypeScript client package (web/client) against the real server: its committed types are
what its generator makes from the live `/openapi.json` and `/asyncapi.json`, and its own tests
(node's test runner) drive the seed's helpers there: a job created from email examples, followed
over the WebSocket stream to its end (also across a dropped connection), then asked to write.

The npm packages are pinned in web/client/package-lock.json and installed by `make clients`
(which `make test` runs); the test fails rather than skips without them.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import SQLITE_ONLY
from tests.processes import REPO_ROOT, Server, serve_keyed

CLIENT_DIR = REPO_ROOT / "web" / "client"
MODEL = "tiny-chat"  # tests/tiny_model.py, offered by the local engine from FT_MODELS_DIR
TIMEOUT = 600

pytestmark = SQLITE_ONLY


@pytest.fixture
def live(database_url: str, tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[Server, str]]:
    """The real server with its embedded worker (jobs train the tiny model), and an admin key."""
    with serve_keyed(tmp_path, database_url, tiny_model_dir.parent, log_level="warning") as live:
        yield live


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (CLIENT_DIR / "node_modules" / ".package-lock.json").exists():
        pytest.fail("Node 20 and web/client's pinned packages are needed: run `make clients`")
    return node


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=CLIENT_DIR, capture_output=True, timeout=TIMEOUT, env=env, check=False
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{output}"
    return output


def test_committed_types_are_those_of_the_live_documents(live, tmp_path):
    server, _ = live
    generated = tmp_path / "generated"
    _run([_node(), "scripts/generate.mjs", server.url, str(generated)])
    committed = CLIENT_DIR / "src" / "generated"
    names = ["openapi.ts", "stream.ts"]
    match, mismatch, errors = filecmp.cmpfiles(committed, generated, names, shallow=False)
    assert (mismatch, errors) == ([], []), (
        "web/client/src/generated is stale: run `npm run generate -- <server URL>` in web/client"
    )
    assert match == names


def test_the_seed_helpers_drive_the_live_service(live):
    server, key = live
    node = _node()
    env = {
        **os.environ,
        "FT_CLIENT_BASE_URL": server.url,
        "FT_CLIENT_API_KEY": key,
        "FT_CLIENT_MODEL": MODEL,
    }
    _run([node, str(CLIENT_DIR / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"])
    output = _run([node, "--experimental-websocket", "--test", "test/"], env=env)
    assert "# fail 0" in output and "# skipped 0" in output, output
    assert "# pass 7" in output, output
