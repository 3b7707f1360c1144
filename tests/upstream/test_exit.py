"""Leaving a provider against the OpenAI-wire double: inventory, import, record and re-run,
interrupted half-way and resumed without doubling anything."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.engines import build_engines, provider_exit
from service.engines.upstream.exit import ExitReport
from service.settings import Settings
from tests.factories import make_tenant
from tests.processes import run_cli, service_env
from tests.upstream.accounts import history
from tests.upstream.conftest import PROVIDER
from tests.upstream.openai_double import ThreadedDouble


class Interrupted(Exception):
    """Stands for a run stopped half-way (Ctrl-C, a crash)."""


@pytest.fixture
def engines(settings: Settings, tiny_model_dir):
    # The local engine with a tiny model, to train again what the provider trained.
    local = settings.model_copy(update={"models_dir": tiny_model_dir.parent})
    return build_engines(local)


async def _wait_for_run(client, headers) -> dict:
    for _ in range(600):
        run = (await client.get(f"/v1/providers/{PROVIDER}/exit", headers=headers)).json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.05)
    raise AssertionError("the exit did not end")


async def test_exit_inventory_import_record_and_rerun_resumed_after_a_stop(
    client, database, double, engines
):
    jobs_there = await history(double)
    admin = await make_tenant(database, "ops", admin=True)

    inventory = (
        await client.get(f"/v1/providers/{PROVIDER}/inventory", headers=admin.headers)
    ).json()
    assert inventory["object"] == "provider.inventory"
    assert sorted(j["id"] for j in inventory["jobs"]) == sorted(jobs_there.values())
    assert {f["purpose"] for f in inventory["files"]} == {"fine-tune", "fine-tune-results"}
    assert len(inventory["files"]) == 3 + 3  # three data files, three results files
    assert len(inventory["models"]) == 3
    assert {m["shutdown_date"] for m in inventory["models"]} == {"2099-12-31"}
    assert all(j["imported_as"] is None for j in inventory["jobs"])

    # A first run stops half-way through the jobs.
    exit_ = provider_exit(engines, PROVIDER, database)

    def stop_after_two(step: str, done: int, total: int) -> None:
        if step == "jobs" and done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await exit_.import_all(
            project_id=admin.project_id, progress=stop_after_two, report=ExitReport()
        )

    # Started again through the admin route, it continues and doubles nothing.
    started = await client.post(f"/v1/providers/{PROVIDER}/exit", headers=admin.headers, json={})
    assert started.status_code == 202, started.text
    run = await _wait_for_run(client, admin.headers)
    assert run["status"] == "completed", run
    assert run["report"]["files_imported"] == 0
    assert run["report"]["jobs_imported"] == 2
    assert run["report"]["models_recorded"] == 3, run["report"]
    again = await client.post(f"/v1/providers/{PROVIDER}/exit", headers=admin.headers, json={})
    assert again.status_code == 202
    rerun_report = (await _wait_for_run(client, admin.headers))["report"]
    assert rerun_report["files_imported"] == rerun_report["jobs_imported"] == 0
    assert rerun_report["models_recorded"] == 0
    (refused_file,) = rerun_report["skipped"]
    assert "tiny.jsonl" in refused_file and "at least 10" in refused_file

    jobs = (await client.get("/v1/fine_tuning/jobs", headers=admin.headers)).json()["data"]
    assert len(jobs) == 4
    by_suffix = {j["user_provided_suffix"]: j for j in jobs}
    validated = by_suffix["support"]
    there = double.jobs[jobs_there["validated"]]
    assert validated["status"] == "succeeded"
    assert validated["fine_tuned_model"] == there.body["fine_tuned_model"]
    assert validated["id"] != there.body["id"] and validated["seed"] == 5
    assert validated["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
    events = (
        await client.get(
            f"/v1/fine_tuning/jobs/{validated['id']}/events",
            headers=admin.headers,
            params={"limit": 100},
        )
    ).json()["data"]
    messages = [e["message"] for e in reversed(events)]
    assert messages[: len(there.events)] == [e["message"] for e in there.events]
    assert any(e["type"] == "metrics" for e in events)
    checkpoints = (
        await client.get(
            f"/v1/fine_tuning/jobs/{validated['id']}/checkpoints", headers=admin.headers
        )
    ).json()["data"]
    assert [c["fine_tuned_model_checkpoint"] for c in checkpoints] == [
        c["fine_tuned_model_checkpoint"] for c in reversed(there.checkpoints)
    ]
    failed = next(j for j in jobs if j["status"] == "failed")
    assert failed["error"]["code"] == "invalid_training_file"

    # Files came in once, checked as uploads; results are downloadable.
    files = (await client.get("/v1/files", headers=admin.headers)).json()["data"]
    data = [
        f for f in files if f["purpose"] == "fine-tune" and not f["filename"].startswith("record-")
    ]
    assert sorted(f["filename"] for f in data) == ["check.jsonl", "emails.jsonl"]
    content = await client.get(
        f"/v1/files/{validated['result_files'][0]}/content", headers=admin.headers
    )
    assert content.text.startswith("step,train_loss")

    # Each fine-tuned model answered: the validation prompts, else 12 held-out training ones.
    records = {f["filename"]: f for f in files if f["filename"].startswith("record-")}
    assert len(records) == 3
    model = validated["fine_tuned_model"]
    record = records[f"record-{model.replace(':', '_')}.jsonl"]
    lines = [
        json.loads(line)
        for line in (
            await client.get(f"/v1/files/{record['id']}/content", headers=admin.headers)
        ).text.splitlines()
    ]
    assert len(lines) == 10  # the validation file's examples
    last = lines[0]["messages"]
    assert last[-1]["role"] == "assistant"
    assert last[-1]["content"] == f"Réponse de {model}: {last[-2]['content']}"
    plain_record = records[
        f"record-{by_suffix['sales']['fine_tuned_model'].replace(':', '_')}.jsonl"
    ]
    assert plain_record["bytes"] > 0

    # Imported jobs are read-only here; re-run, one trains the same data on a local model.
    refused = await client.post(
        f"/v1/fine_tuning/jobs/{validated['id']}/cancel", headers=admin.headers
    )
    assert refused.status_code == 400
    rerun = await client.post(
        f"/v1/fine_tuning/jobs/{validated['id']}/rerun",
        headers=admin.headers,
        json={"model": "tiny-chat"},
    )
    assert rerun.status_code == 200, rerun.text
    local = rerun.json()
    assert local["model"] == "tiny-chat" and local["status"] == "queued"
    assert local["training_file"] == validated["training_file"]
    assert local["validation_file"] == validated["validation_file"]
    assert local["seed"] == 5 and local["user_provided_suffix"] == "support"
    assert local["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
    assert local["metadata"]["rerun_of"] == validated["id"]

    inventory = (
        await client.get(f"/v1/providers/{PROVIDER}/inventory", headers=admin.headers)
    ).json()
    assert all(j["imported_as"] for j in inventory["jobs"])
    assert all(m["recorded_as"] for m in inventory["models"])


async def test_exit_routes_need_an_admin_key_and_a_known_provider(client, database):
    member = await make_tenant(database, "team")
    refused = await client.get(f"/v1/providers/{PROVIDER}/inventory", headers=member.headers)
    assert refused.status_code == 403
    admin = await make_tenant(database, "ops", admin=True)
    unknown = await client.post("/v1/providers/nobody/exit", headers=admin.headers, json={})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "provider_not_found"
    bad = await client.post(
        f"/v1/providers/{PROVIDER}/exit", headers=admin.headers, json={"steps": ["delete"]}
    )
    assert bad.status_code == 400


def test_the_exit_command_imports_records_then_finds_nothing_left(database_url, tmp_path):
    with ThreadedDouble() as threaded:
        threaded.call(history)
        provider = {
            "name": PROVIDER,
            "base_url": threaded.url,
            "api_key": threaded.double.api_key,
            "models": [{"id": "gpt-4o-mini", "shutdown_date": "2099-12-31"}],
        }
        env = service_env(
            data_dir=str(tmp_path / "data"),
            database_url=database_url,
            providers=json.dumps([provider]),
        )
        first = run_cli("exit", "--provider", PROVIDER, "--project", "acme", env=env)
        assert first.returncode == 0, first.stderr
        summary, report = first.stdout.split("\n", 1)
        assert summary == (
            f"{PROVIDER}: 6 files, 4 jobs, 3 fine-tuned models (shutting down on 2099-12-31)"
        )
        assert json.loads(report)["jobs_imported"] == 4
        assert json.loads(report)["models_recorded"] == 3
        assert "jobs: 100%" in first.stderr and "record: 100%" in first.stderr  # progress bars

        second = run_cli("exit", "--provider", PROVIDER, "--project", "acme", env=env)
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout.split("\n", 1)[1])
        assert (again["files_imported"], again["jobs_imported"], again["models_recorded"]) == (
            0,
            0,
            0,
        )
        assert threaded.double.api_key not in first.stdout + first.stderr

        unknown = run_cli("exit", "--provider", "nobody", env=env)
        assert unknown.returncode == 2 and "No provider named 'nobody'" in unknown.stderr
