"""The command line, run as a real process: `python -m service keys create` and `migrate`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from alembic.script import ScriptDirectory

from service.db import alembic_config
from tests.processes import run_cli, service_env


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def create_key(database_url: str, data_dir: Path, *args: str) -> tuple[str, str]:
    """Run `keys create <args>` and return its whole stdout and its last line (the key)."""
    env = service_env(data_dir=str(data_dir), database_url=database_url)
    result = run_cli("keys", "create", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stdout.splitlines()[-1]


async def test_keys_create_prints_a_working_key_last(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    output, key = create_key(database_url, tmp_path / "cli", "--project", "support")
    assert "created project support" in output
    assert key.startswith("sk-ft-")

    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/models", headers=headers)).status_code == 200
    # A project key is not an admin key.
    refused = await client.post(
        "/v1/organization/projects", headers=headers, json={"name": "other"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_key_required"


async def test_keys_create_admin_key_in_an_existing_project(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    _, first = create_key(database_url, tmp_path / "cli", "--project", "ops")
    output, admin = create_key(database_url, tmp_path / "cli", "--project", "ops", "--admin")
    assert "created project" not in output
    assert "created admin key" in output
    assert admin != first

    headers = {"Authorization": f"Bearer {admin}"}
    projects = await client.get("/v1/organization/projects", headers=headers)
    assert projects.status_code == 200, projects.text
    assert [p["name"] for p in projects.json()["data"]] == ["ops"]
    created = await client.post("/v1/organization/projects", headers=headers, json={"name": "new"})
    assert created.status_code == 200, created.text

    # Both keys belong to the same project: a file uploaded with one is visible with the other.
    uploaded = await client.post(
        "/v1/files",
        headers={"Authorization": f"Bearer {first}"},
        data={"purpose": "user_data"},
        files={"file": ("notes.txt", b"hello", "text/plain")},
    )
    assert uploaded.status_code == 200, uploaded.text
    listed = await client.get("/v1/files", headers=headers)
    assert [f["id"] for f in listed.json()["data"]] == [uploaded.json()["id"]]


def test_keys_create_refuses_a_missing_project_option(tmp_path: Path) -> None:
    result = run_cli("keys", "create", env=service_env(data_dir=str(tmp_path)))
    assert result.returncode == 2
    assert "--project" in result.stderr


def tables_and_revision(path: Path) -> tuple[set[str], list[str]]:
    with sqlite3.connect(path) as connection:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        versions = connection.execute("SELECT version_num FROM alembic_version")
        revisions = [row[0] for row in versions]
    connection.close()
    return tables, revisions


def test_migrate_an_empty_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    env = service_env(data_dir=str(tmp_path / "data"), database_url=f"sqlite+aiosqlite:///{path}")

    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "database is at the latest revision"
    tables, revisions = tables_and_revision(path)
    assert {"projects", "api_keys", "files", "fine_tuning_jobs", "fine_tuned_models"} <= tables
    assert revisions == [head_revision()]

    again = run_cli("migrate", env=env)  # already at head: nothing to do
    assert again.returncode == 0, again.stderr
    assert tables_and_revision(path) == (tables, revisions)


def test_migrate_defaults_to_a_sqlite_file_in_the_data_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_cli("migrate", env=service_env(data_dir=str(data_dir)))
    assert result.returncode == 0, result.stderr
    _, revisions = tables_and_revision(data_dir / "service.db")
    assert revisions == [head_revision()]


def test_a_bad_setting_stops_start_up_with_the_problem_never_the_secret(tmp_path: Path) -> None:
    secret = "sk-live-" + "x" * 24
    providers = (
        '[{"name": "Open AI", "base_url": "not a url", "api_key": "' + secret + '", "models": []}]'
    )
    env = service_env(data_dir=str(tmp_path), providers=providers)
    result = run_cli("migrate", env=env)
    assert result.returncode == 2
    assert "invalid setting FT_PROVIDERS.0.NAME" in result.stderr
    assert "invalid setting FT_PROVIDERS.0.BASE_URL" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_a_model_offered_by_two_engines_stops_start_up_clearly(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    providers = (
        '[{"name": "gpu", "kind": "peer", "base_url": "http://127.0.0.1:9/v1", '
        '"api_key": "sk-ft-secret-value", "models": ["tiny-chat"]}]'
    )
    env = service_env(
        data_dir=str(tmp_path), models_dir=str(tiny_model_dir.parent), providers=providers
    )
    result = run_cli("exit", "--provider", "gpu", "--inventory-only", env=env)
    assert result.returncode == 2
    assert "invalid configuration: model 'tiny-chat' is offered by both 'local' and 'gpu'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "sk-ft-secret-value" not in result.stderr
