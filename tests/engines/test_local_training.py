"""The local engine trains for real: a tiny model, LoRA, TRL, driven through the API."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest

from service.engines.local.worker import LocalWorker
from service.models.registry import build_registry
from tests.factories import (
    chat_file,
    jsonl,
    make_file,
    make_tenant,
    preference_example,
    reinforcement_example,
)

JOBS = "/v1/fine_tuning/jobs"


def method(kind: str = "supervised", **hyperparameters: object) -> dict:
    """The `method` field of a job request."""
    return {"type": kind, kind: {"hyperparameters": hyperparameters}}


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
            "method": method(n_epochs=2, batch_size=4, learning_rate_multiplier=50),
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


async def test_dpo_job_learns_the_preferred_emails(client, database, settings, registry):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, jsonl([preference_example(i) for i in range(10)]))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "seed": 3,
            "method": method(
                "dpo", n_epochs=3, batch_size=2, beta=0.1, learning_rate_multiplier=100
            ),
        },
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    worker = LocalWorker(database=database, settings=settings, registry=registry)
    assert await worker.poll_once() is True
    job = (await client.get(f"{JOBS}/{job_id}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    events = (
        await client.get(f"{JOBS}/{job_id}/events", headers=tenant.headers, params={"limit": 100})
    ).json()["data"][::-1]
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert len(metrics) == 15
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["train_reward_margins"] > 0


async def _trained_model(client, database, settings, registry, tenant) -> dict:
    file_id = await make_file(client, tenant, chat_file(12))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "seed": 11,
            "method": method(n_epochs=1, batch_size=4, learning_rate_multiplier=50),
        },
    )
    worker = LocalWorker(database=database, settings=settings, registry=registry)
    await worker.poll_once()
    job = (await client.get(f"{JOBS}/{created.json()['id']}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    return job


async def test_fine_tuned_model_and_checkpoint_answer_chat_completions(
    client, database, settings, registry
):
    tenant = await make_tenant(database)
    job = await _trained_model(client, database, settings, registry, tenant)
    checkpoint = (
        await client.get(f"{JOBS}/{job['id']}/checkpoints", headers=tenant.headers)
    ).json()["data"][0]
    for model in ("tiny-chat", job["fine_tuned_model"], checkpoint["fine_tuned_model_checkpoint"]):
        response = await client.post(
            "/v1/chat/completions",
            headers=tenant.headers,
            json={
                "model": model,
                "messages": [{"role": "user", "content": "Bonjour"}],
                "max_completion_tokens": 8,
                "temperature": 0,
                "n": 2,
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "chat.completion" and body["model"] == model
        assert len(body["choices"]) == 2
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Greedy decoding with the same seed is deterministic.
    twice = [
        (
            await client.post(
                "/v1/chat/completions",
                headers=tenant.headers,
                json={
                    "model": job["fine_tuned_model"],
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 6,
                    "temperature": 0,
                },
            )
        ).json()["choices"][0]["message"]["content"]
        for _ in range(2)
    ]
    assert twice[0] == twice[1]


async def test_streamed_completion_matches_the_openai_chunk_format(
    client, database, settings, registry
):
    tenant = await make_tenant(database)
    job = await _trained_model(client, database, settings, registry, tenant)
    request = {
        "model": job["fine_tuned_model"],
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream(
        "POST", "/v1/chat/completions", headers=tenant.headers, json=request
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    plain = await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={**request, "stream": False, "stream_options": None},
    )
    assert streamed == plain.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == plain.json()["usage"]


async def test_other_projects_cannot_use_a_fine_tuned_model(client, database, settings, registry):
    owner = await make_tenant(database)
    job = await _trained_model(client, database, settings, registry, owner)
    stranger = await make_tenant(database, "stranger")
    response = await client.post(
        "/v1/chat/completions",
        headers=stranger.headers,
        json={"model": job["fine_tuned_model"], "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 404
    openai_base = await client.post(
        "/v1/chat/completions",
        headers=owner.headers,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert openai_base.status_code == 400
    assert openai_base.json()["error"]["code"] == "model_not_served"


async def _wait_for_step(database, job_id: str, step: int, timeout: float = 60) -> None:
    from sqlmodel import select

    from service.jobs.models import JobEvent

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with database.session() as session:
            rows = (
                await session.exec(
                    select(JobEvent.data).where(
                        JobEvent.job_id == job_id, JobEvent.type == "metrics"
                    )
                )
            ).all()
        if any(r and r["step"] >= step for r in rows):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


async def _metric_steps(client, tenant, job_id) -> list[int]:
    events = (
        await client.get(f"{JOBS}/{job_id}/events", headers=tenant.headers, params={"limit": 1000})
    ).json()["data"][::-1]
    return [e["data"]["step"] for e in events if e["type"] == "metrics"]


@pytest.fixture
def quick_settings(settings):
    return settings.model_copy(update={"worker_heartbeat_seconds": 0.1})


async def test_pause_then_resume_finishes_the_planned_steps(
    client, database, quick_settings, registry
):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "method": method(n_epochs=5, batch_size=1, learning_rate_multiplier=10),
        },
    )
    job_id = created.json()["id"]
    worker = LocalWorker(database=database, settings=quick_settings, registry=registry)
    running = asyncio.create_task(worker.poll_once())
    await _wait_for_step(database, job_id, 3)
    paused = await client.post(f"{JOBS}/{job_id}/pause", headers=tenant.headers)
    assert paused.json()["status"] == "paused"
    await asyncio.wait_for(running, 120)
    paused_job = (await client.get(f"{JOBS}/{job_id}", headers=tenant.headers)).json()
    assert paused_job["status"] == "paused"
    assert paused_job["estimated_finish"] > paused_job["created_at"]
    steps_before = await _metric_steps(client, tenant, job_id)
    assert 3 <= len(steps_before) < 60
    saved = sorted((quick_settings.jobs_dir / job_id).glob("checkpoint-*"))
    assert any((path / "optimizer.pt").is_file() for path in saved)

    await client.post(f"{JOBS}/{job_id}/resume", headers=tenant.headers)
    assert await worker.poll_once() is True
    job = (await client.get(f"{JOBS}/{job_id}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    assert await _metric_steps(client, tenant, job_id) == list(range(1, 61))


async def test_cancel_stops_training_within_a_step(client, database, quick_settings, registry):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "method": method(n_epochs=10, batch_size=1),
        },
    )
    job_id = created.json()["id"]
    worker = LocalWorker(database=database, settings=quick_settings, registry=registry)
    running = asyncio.create_task(worker.poll_once())
    await _wait_for_step(database, job_id, 2)
    at_cancel = max(await _metric_steps(client, tenant, job_id))
    await client.post(f"{JOBS}/{job_id}/cancel", headers=tenant.headers)
    await asyncio.wait_for(running, 120)
    job = (await client.get(f"{JOBS}/{job_id}", headers=tenant.headers)).json()
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None
    # The worker notices within a heartbeat (0.1 s here) and the trainer within one step.
    assert max(await _metric_steps(client, tenant, job_id)) <= at_cancel + 10 < 120


async def test_same_seed_and_data_give_the_same_final_loss(client, database, settings, registry):
    tenant = await make_tenant(database)
    finals = []
    for _ in range(2):
        job = await _trained_model(client, database, settings, registry, tenant)
        events = (
            await client.get(
                f"{JOBS}/{job['id']}/events", headers=tenant.headers, params={"limit": 100}
            )
        ).json()["data"]
        finals.append(next(e["data"]["train_loss"] for e in events if e["type"] == "metrics"))
    assert finals[0] == finals[1]


async def test_deleting_a_fine_tuned_model_deletes_its_adapter(
    client, database, settings, registry
):
    from pathlib import Path

    from sqlmodel import select

    from service.models.models import FineTunedModel

    tenant = await make_tenant(database)
    job = await _trained_model(client, database, settings, registry, tenant)
    async with database.session() as session:
        location = (await session.exec(select(FineTunedModel.location))).one()
    assert location and Path(location).is_dir()
    deleted = await client.delete(f"/v1/models/{job['fine_tuned_model']}", headers=tenant.headers)
    assert deleted.json()["deleted"] is True
    assert not Path(location).exists()
    gone = await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={"model": job["fine_tuned_model"], "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert gone.status_code == 404


async def test_reinforcement_job_trains_with_its_grader(client, database, settings, registry):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, jsonl([reinforcement_example(i) for i in range(10)]))
    grader = {
        "type": "multi",
        "name": "combo",
        "calculate_output": "0.5 * close + 0.5 * judge",
        "graders": {
            "close": {
                "type": "text_similarity",
                "name": "close",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference_answer}}",
                "evaluation_metric": "rouge_l",
            },
            "judge": {
                "type": "score_model",
                "name": "judge",
                "model": "tiny-chat",
                "range": [0, 10],
                "input": [{"role": "user", "content": "Note /10 : {{sample.output_text}}"}],
            },
        },
    }
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "seed": 5,
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": grader,
                    "hyperparameters": {"n_epochs": 1, "batch_size": 4},
                },
            },
        },
    )
    assert created.status_code == 200, created.text
    worker = LocalWorker(database=database, settings=settings, registry=registry)
    assert await worker.poll_once() is True
    job = (await client.get(f"{JOBS}/{created.json()['id']}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    assert job["method"]["reinforcement"]["hyperparameters"]["num_generations"] == 4
    events = (
        await client.get(
            f"{JOBS}/{job['id']}/events", headers=tenant.headers, params={"limit": 100}
        )
    ).json()["data"]
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert len(metrics) == 10
    assert all(0.0 <= m["train_reward_mean"] <= 1.0 for m in metrics)


async def test_python_graders_are_refused_for_local_models(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, jsonl([reinforcement_example(i) for i in range(10)]))
    response = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": file_id,
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": {
                        "type": "python",
                        "name": "p",
                        "source": "def grade(sample, item):\n    return 1.0",
                    }
                },
            },
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_grader"


async def test_two_workers_never_train_the_same_job(client, database, settings, registry):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    job_ids = []
    for _ in range(3):
        created = await client.post(
            JOBS,
            headers=tenant.headers,
            json={
                "model": "tiny-chat",
                "training_file": file_id,
                "method": method(n_epochs=1, batch_size=4),
            },
        )
        job_ids.append(created.json()["id"])
    workers = [
        LocalWorker(database=database, settings=settings, registry=registry) for _ in range(2)
    ]

    async def drain(worker: LocalWorker) -> int:
        done = 0
        while await worker.poll_once():
            done += 1
        return done

    counts = await asyncio.gather(*(drain(w) for w in workers))
    assert sum(counts) == 3
    for job_id in job_ids:
        events = (
            await client.get(
                f"{JOBS}/{job_id}/events", headers=tenant.headers, params={"limit": 100}
            )
        ).json()["data"]
        messages = [e["message"] for e in events]
        assert messages.count("Fine-tuning job started") == 1
        assert messages[0] == "The job has successfully completed"


async def test_validation_file_is_evaluated_at_each_epoch_end(client, database, settings, registry):
    tenant = await make_tenant(database)
    training = await make_file(client, tenant, chat_file(12))
    validation = await make_file(client, tenant, chat_file(10))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": "tiny-chat",
            "training_file": training,
            "validation_file": validation,
            "method": method(n_epochs=2, batch_size=4, learning_rate_multiplier=50),
        },
    )
    worker = LocalWorker(database=database, settings=settings, registry=registry)
    assert await worker.poll_once() is True
    job = (await client.get(f"{JOBS}/{created.json()['id']}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    checkpoints = (
        await client.get(f"{JOBS}/{job['id']}/checkpoints", headers=tenant.headers)
    ).json()["data"]
    assert all(c["metrics"]["valid_loss"] > 0 for c in checkpoints)
    content = await client.get(
        f"/v1/files/{job['result_files'][0]}/content", headers=tenant.headers
    )
    rows = list(csv.DictReader(io.StringIO(content.text)))
    assert [bool(r["valid_loss"]) for r in rows] == [False, False, True, False, False, True]


async def test_a_checkpoint_can_be_trained_further(client, database, settings, registry):
    tenant = await make_tenant(database)
    first = await _trained_model(client, database, settings, registry, tenant)
    checkpoint = (
        await client.get(f"{JOBS}/{first['id']}/checkpoints", headers=tenant.headers)
    ).json()["data"][0]
    file_id = await make_file(client, tenant, chat_file(12))
    created = await client.post(
        JOBS,
        headers=tenant.headers,
        json={
            "model": checkpoint["fine_tuned_model_checkpoint"],
            "training_file": file_id,
            "method": method(n_epochs=1, batch_size=4),
        },
    )
    assert created.status_code == 200, created.text
    worker = LocalWorker(database=database, settings=settings, registry=registry)
    assert await worker.poll_once() is True
    job = (await client.get(f"{JOBS}/{created.json()['id']}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded", job["error"]
    assert job["model"] == checkpoint["fine_tuned_model_checkpoint"]
    assert job["fine_tuned_model"].startswith("ft:tiny-chat:personal::")


async def test_a_training_error_fails_the_job_with_a_clear_error(
    client, database, settings, registry, tiny_model_dir, tmp_path
):
    import shutil

    from service.models.registry import build_registry as build

    broken_dir = tmp_path / "models"
    shutil.copytree(tiny_model_dir, broken_dir / "doomed")
    doomed = build(broken_dir, {})
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    registry.add(doomed.resolve("doomed"))
    created = await client.post(
        JOBS, headers=tenant.headers, json={"model": "doomed", "training_file": file_id}
    )
    assert created.status_code == 200, created.text
    (broken_dir / "doomed" / "model.safetensors").write_bytes(b"not weights")
    worker = LocalWorker(database=database, settings=settings, registry=registry)
    assert await worker.poll_once() is True
    job = (await client.get(f"{JOBS}/{created.json()['id']}", headers=tenant.headers)).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "training_error"
    assert job["error"]["message"].startswith("Training failed:")
    assert job["finished_at"] is not None
