"""The local engine trains for real: a tiny model, LoRA, TRL, driven through the API."""

from __future__ import annotations

import csv
import io

import pytest

from service.engines.local.worker import LocalWorker
from service.models.registry import build_registry
from tests.factories import chat_file, make_file, make_tenant

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def registry(tiny_model_dir):
    return build_registry(tiny_model_dir.parent, {})


async def test_supervised_job_trains_checkpoints_and_succeeds(client, database, settings, registry):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "suffix": "emails",
            "seed": 7,
            "method": {
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {
                        "n_epochs": 2,
                        "batch_size": 4,
                        "learning_rate_multiplier": 50,
                    }
                },
            },
        },
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]

    worker = LocalWorker(database=database, settings=settings, registry=registry)
    assert await worker.poll_once() is True
    assert await worker.poll_once() is False  # nothing left to claim

    job = (await client.get(f"{JOBS}/{job_id}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    assert job["fine_tuned_model"].startswith("ft:tiny-chat:personal:emails:")
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 50,
    }
    assert job["trained_tokens"] > 0 and job["finished_at"] is not None

    events = (
        await client.get(f"{JOBS}/{job_id}/events", headers=tenant.headers, params={"limit": 100})
    ).json()["data"][::-1]
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert all(m["total_steps"] == 6 for m in metrics)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    messages = [e["message"] for e in events]
    assert "Fine-tuning job started" in messages
    assert messages[-1] == "The job has successfully completed"

    checkpoints = (await client.get(f"{JOBS}/{job_id}/checkpoints", headers=tenant.headers)).json()[
        "data"
    ]
    assert [c["step_number"] for c in checkpoints] == [6, 3]
    assert checkpoints[0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-6")

    results = job["result_files"]
    assert len(results) == 1
    content = await client.get(f"/v1/files/{results[0]}/content", headers=tenant.headers)
    rows = list(csv.DictReader(io.StringIO(content.text)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])

    models = [
        m["id"] for m in (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
    ]
    assert "tiny-chat" in models and job["fine_tuned_model"] in models


async def test_local_models_refuse_methods_the_trainer_does_not_run_yet(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    response = await client.post(
        JOBS,
        headers=tenant.headers,
        json={"model": "tiny-chat", "training_file": file_id, "method": {"type": "dpo"}},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_method"
