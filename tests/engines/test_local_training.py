"""The local engine trains for real: a tiny model, LoRA, TRL, driven through the API."""

from __future__ import annotations

import asyncio
import csv
import io

import httpx
import pytest

from service.engines.local import memory
from service.engines.local.models import discover
from service.engines.local.worker import LocalWorker
from tests.databases import SQLITE_ONLY
from tests.engines.local_jobs import local_engine, train_job
from tests.factories import (
    Tenant,
    chat_file,
    get_job,
    job_method,
    make_file,
    make_job,
    make_tenant,
    preference_file,
    reinforcement_file,
)
from tests.fake_engine import fake_engines

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def local(settings, tiny_model_dir):
    return local_engine(settings, tiny_model_dir.parent)


@pytest.fixture
def engines(local):
    return fake_engines(local)


@pytest.fixture
def worker(database, local):
    return local.worker(database)


def _reinforcement(grader: dict, **hyperparameters: object) -> dict:
    """A reinforcement `method` with its grader, and its hyperparameters when any are given."""
    section: dict[str, object] = {"grader": grader}
    if hyperparameters:
        section["hyperparameters"] = hyperparameters
    return {"type": "reinforcement", "reinforcement": section}


async def _events(client, tenant: Tenant, job_id: str, limit: int = 100) -> list[dict]:
    """The job's latest `limit` events, oldest first (the API lists them newest first)."""
    response = await client.get(
        f"{JOBS}/{job_id}/events", headers=tenant.headers, params={"limit": limit}
    )
    return response.json()["data"][::-1]


def _metrics(events: list[dict]) -> list[dict]:
    """The data of the metrics events among `events`, in the same order."""
    return [e["data"] for e in events if e["type"] == "metrics"]


async def _checkpoints(client, tenant: Tenant, job_id: str) -> list[dict]:
    """The job's checkpoints, latest first."""
    response = await client.get(f"{JOBS}/{job_id}/checkpoints", headers=tenant.headers)
    return response.json()["data"]


async def _result_rows(client, tenant: Tenant, file_id: str) -> list[dict[str, str]]:
    """The rows of a job's result file (its metrics CSV)."""
    content = await client.get(f"/v1/files/{file_id}/content", headers=tenant.headers)
    return list(csv.DictReader(io.StringIO(content.text)))


async def _chat(
    client, tenant: Tenant, model: str, content: str = "Hi", **options: object
) -> httpx.Response:
    """POST a one-message chat completion request to `model`."""
    return await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={"model": model, "messages": [{"role": "user", "content": content}], **options},
    )


async def _train_tiny_chat(client, tenant: Tenant, worker: LocalWorker, **body) -> dict:
    """Train tiny-chat to success, on 12 chat examples unless `body` names a training file."""
    if "training_file" not in body:
        body["training_file"] = await make_file(client, tenant, chat_file(12))
    return await train_job(client, tenant, worker, model="tiny-chat", **body)


async def test_supervised_job_trains_checkpoints_and_succeeds(client, database, worker):
    tenant = await make_tenant(database)
    method = job_method(n_epochs=2, batch_size=4, learning_rate_multiplier=50)
    job = await _train_tiny_chat(client, tenant, worker, suffix="emails", seed=7, method=method)
    assert await worker.poll_once() is False  # nothing left to claim

    assert job["fine_tuned_model"].startswith("ft:tiny-chat:personal:emails:")
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 50,
    }
    assert job["trained_tokens"] > 0 and job["finished_at"] is not None

    events = await _events(client, tenant, job["id"])
    metrics = _metrics(events)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert all(m["total_steps"] == 6 for m in metrics)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    messages = [e["message"] for e in events]
    assert "Fine-tuning job started" in messages
    assert messages[-1] == "The job has successfully completed"
    # The trainer's per-device choices are on the record, right after the start.
    setup = events[messages.index("Fine-tuning job started") + 1]
    assert setup["message"].startswith("Training on cpu (")
    assert setup["data"]["padding_free"] is True
    assert setup["data"]["attention"] == "sdpa_segments"
    assert setup["data"]["trained_token_head"] is True
    assert setup["data"]["retain_freed_memory"] is memory.available()

    checkpoints = await _checkpoints(client, tenant, job["id"])
    assert [c["step_number"] for c in checkpoints] == [6, 3]
    assert checkpoints[0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-6")

    results = job["result_files"]
    assert len(results) == 1
    rows = await _result_rows(client, tenant, results[0])
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])

    models = [
        m["id"] for m in (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
    ]
    assert "tiny-chat" in models and job["fine_tuned_model"] in models


@SQLITE_ONLY
async def test_dpo_job_learns_the_preferred_emails(client, database, worker):
    tenant = await make_tenant(database)
    preferences = await make_file(client, tenant, preference_file(10))
    dpo = job_method("dpo", n_epochs=3, batch_size=2, beta=0.1, learning_rate_multiplier=100)
    job = await _train_tiny_chat(
        client, tenant, worker, training_file=preferences, seed=3, method=dpo
    )
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    metrics = _metrics(await _events(client, tenant, job["id"]))
    assert len(metrics) == 15
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["train_reward_margins"] > 0


async def _trained_model(client, tenant: Tenant, worker: LocalWorker) -> dict:
    """A tiny-chat job trained for one epoch on 12 chat examples, with a fixed seed."""
    method = job_method(n_epochs=1, batch_size=4, learning_rate_multiplier=50)
    return await _train_tiny_chat(client, tenant, worker, seed=11, method=method)


@SQLITE_ONLY
async def test_fine_tuned_model_and_checkpoint_answer_chat_completions(client, database, worker):
    tenant = await make_tenant(database)
    job = await _trained_model(client, tenant, worker)
    checkpoint = (await _checkpoints(client, tenant, job["id"]))[0]
    for model in ("tiny-chat", job["fine_tuned_model"], checkpoint["fine_tuned_model_checkpoint"]):
        response = await _chat(
            client, tenant, model, "Bonjour", max_completion_tokens=8, temperature=0, n=2
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
    async def greedy_reply() -> str:
        response = await _chat(client, tenant, job["fine_tuned_model"], max_tokens=6, temperature=0)
        return response.json()["choices"][0]["message"]["content"]

    assert await greedy_reply() == await greedy_reply()


@SQLITE_ONLY
async def test_streamed_completion_matches_the_openai_chunk_format(client, database, worker):
    tenant = await make_tenant(database)
    job = await _trained_model(client, tenant, worker)
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


async def test_other_projects_cannot_use_a_fine_tuned_model(client, database, worker):
    owner = await make_tenant(database)
    job = await _trained_model(client, owner, worker)
    stranger = await make_tenant(database, "stranger")
    response = await _chat(client, stranger, job["fine_tuned_model"])
    assert response.status_code == 404
    # Another engine's base model is answered by that engine, never by the local one.
    other = await _chat(client, owner, "gpt-4o-mini", "Bonjour")
    assert other.status_code == 200, other.text
    assert other.json()["choices"][0]["message"]["content"] == "echo: Bonjour"


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


async def _metric_steps(client, tenant: Tenant, job_id: str) -> list[int]:
    """Every step the job has logged metrics for, in order."""
    return [m["step"] for m in _metrics(await _events(client, tenant, job_id, limit=1000))]


@pytest.fixture
def quick_settings(settings):
    return settings.model_copy(update={"worker_heartbeat_seconds": 0.1})


@pytest.fixture
def quick_worker(database, quick_settings, local):
    """A worker that heartbeats every 0.1 s, so it sees a pause or a cancel at once."""
    return LocalWorker(database=database, settings=quick_settings, engine=local)


async def _train_in_background(
    client, database, tenant: Tenant, worker: LocalWorker, *, until_step: int, **hyperparameters
) -> tuple[str, asyncio.Task[bool]]:
    """Start training tiny-chat on 12 examples; return the job id and the worker's task once the
    job has logged `until_step`."""
    created = await make_job(
        client,
        tenant,
        model="tiny-chat",
        training_file=await make_file(client, tenant, chat_file(12)),
        method=job_method(**hyperparameters),
    )
    running = asyncio.create_task(worker.poll_once())
    await _wait_for_step(database, created["id"], until_step)
    return created["id"], running


async def test_pause_then_resume_finishes_the_planned_steps(
    client, database, quick_settings, quick_worker
):
    tenant = await make_tenant(database)
    job_id, running = await _train_in_background(
        client,
        database,
        tenant,
        quick_worker,
        until_step=3,
        n_epochs=5,
        batch_size=1,
        learning_rate_multiplier=10,
    )
    paused = await client.post(f"{JOBS}/{job_id}/pause", headers=tenant.headers)
    assert paused.json()["status"] == "paused"
    await asyncio.wait_for(running, 120)
    paused_job = await get_job(client, tenant, job_id)
    assert paused_job["status"] == "paused"
    assert paused_job["estimated_finish"] > paused_job["created_at"]
    steps_before = await _metric_steps(client, tenant, job_id)
    assert 3 <= len(steps_before) < 60
    saved = sorted((quick_settings.jobs_dir / job_id).glob("checkpoint-*"))
    assert any((path / "optimizer.pt").is_file() for path in saved)

    await client.post(f"{JOBS}/{job_id}/resume", headers=tenant.headers)
    assert await quick_worker.poll_once() is True
    job = await get_job(client, tenant, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert await _metric_steps(client, tenant, job_id) == list(range(1, 61))


async def test_cancel_stops_training_within_a_step(client, database, quick_worker):
    tenant = await make_tenant(database)
    job_id, running = await _train_in_background(
        client, database, tenant, quick_worker, until_step=2, n_epochs=10, batch_size=1
    )
    at_cancel = max(await _metric_steps(client, tenant, job_id))
    await client.post(f"{JOBS}/{job_id}/cancel", headers=tenant.headers)
    await asyncio.wait_for(running, 120)
    job = await get_job(client, tenant, job_id)
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None
    # The worker notices within a heartbeat (0.1 s here) and the trainer within one step.
    assert max(await _metric_steps(client, tenant, job_id)) <= at_cancel + 10 < 120


@SQLITE_ONLY
async def test_same_seed_and_data_give_the_same_final_loss(client, database, worker):
    tenant = await make_tenant(database)
    finals = []
    for _ in range(2):
        job = await _trained_model(client, tenant, worker)
        finals.append(_metrics(await _events(client, tenant, job["id"]))[-1]["train_loss"])
    assert finals[0] == finals[1]


@SQLITE_ONLY
async def test_deleting_a_fine_tuned_model_deletes_its_adapter(client, database, worker):
    from pathlib import Path

    from sqlmodel import select

    from service.models.models import FineTunedModel

    tenant = await make_tenant(database)
    job = await _trained_model(client, tenant, worker)
    async with database.session() as session:
        location = (await session.exec(select(FineTunedModel.location))).one()
    assert location and Path(location).is_dir()
    deleted = await client.delete(f"/v1/models/{job['fine_tuned_model']}", headers=tenant.headers)
    assert deleted.json()["deleted"] is True
    assert not Path(location).exists()
    gone = await _chat(client, tenant, job["fine_tuned_model"])
    assert gone.status_code == 404


@SQLITE_ONLY
async def test_reinforcement_job_trains_with_its_grader(client, database, worker):
    tenant = await make_tenant(database)
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
    prompts = await make_file(client, tenant, reinforcement_file(10))
    method = _reinforcement(grader, n_epochs=1, batch_size=4)
    job = await _train_tiny_chat(
        client, tenant, worker, training_file=prompts, seed=5, method=method
    )
    assert job["method"]["reinforcement"]["hyperparameters"]["num_generations"] == 4
    metrics = _metrics(await _events(client, tenant, job["id"]))
    assert len(metrics) == 10
    assert all(0.0 <= m["train_reward_mean"] <= 1.0 for m in metrics)


async def test_python_graders_are_refused_for_local_models(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, reinforcement_file(10))
    grader = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0"}
    response = await client.post(
        JOBS,
        headers=tenant.headers,
        json={"model": "tiny-chat", "training_file": file_id, "method": _reinforcement(grader)},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_grader"


async def test_two_workers_never_train_the_same_job(client, database, local):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, chat_file(12))
    method = job_method(n_epochs=1, batch_size=4)
    job_ids = []
    for _ in range(3):
        job = await make_job(
            client, tenant, model="tiny-chat", training_file=file_id, method=method
        )
        job_ids.append(job["id"])
    workers = [local.worker(database) for _ in range(2)]

    async def drain(worker: LocalWorker) -> int:
        done = 0
        while await worker.poll_once():
            done += 1
        return done

    counts = await asyncio.gather(*(drain(w) for w in workers))
    assert sum(counts) == 3
    for job_id in job_ids:
        messages = [e["message"] for e in await _events(client, tenant, job_id)]
        assert messages.count("Fine-tuning job started") == 1
        assert messages[-1] == "The job has successfully completed"


@SQLITE_ONLY
async def test_validation_file_is_evaluated_at_each_epoch_end(client, database, worker):
    tenant = await make_tenant(database)
    validation = await make_file(client, tenant, chat_file(10))
    method = job_method(n_epochs=2, batch_size=4, learning_rate_multiplier=50)
    job = await _train_tiny_chat(client, tenant, worker, validation_file=validation, method=method)
    checkpoints = await _checkpoints(client, tenant, job["id"])
    assert all(c["metrics"]["valid_loss"] > 0 for c in checkpoints)
    rows = await _result_rows(client, tenant, job["result_files"][0])
    assert [bool(r["valid_loss"]) for r in rows] == [False, False, True, False, False, True]


@SQLITE_ONLY
async def test_a_checkpoint_can_be_trained_further(client, database, worker):
    tenant = await make_tenant(database)
    first = await _trained_model(client, tenant, worker)
    checkpoint = (await _checkpoints(client, tenant, first["id"]))[0]
    job = await train_job(
        client,
        tenant,
        worker,
        model=checkpoint["fine_tuned_model_checkpoint"],
        training_file=await make_file(client, tenant, chat_file(12)),
        method=job_method(n_epochs=1, batch_size=4),
    )
    assert job["model"] == checkpoint["fine_tuned_model_checkpoint"]
    assert job["fine_tuned_model"].startswith("ft:tiny-chat:personal::")


class TestBrokenWeights:
    """A base model whose weights break after the job was created."""

    @pytest.fixture
    def doomed(self, tiny_model_dir, tmp_path):
        import shutil

        folder = tmp_path / "models" / "doomed"
        shutil.copytree(tiny_model_dir, folder)
        return folder

    @pytest.fixture
    def local(self, settings, tiny_model_dir, doomed):
        from service.engines.local.engine import LocalEngine

        return LocalEngine(settings=settings, models=discover(doomed.parent, {}))

    async def test_a_training_error_fails_the_job_with_a_clear_error(
        self, client, database, worker, doomed
    ):
        tenant = await make_tenant(database)
        file_id = await make_file(client, tenant, chat_file(12))
        created = await make_job(client, tenant, model="doomed", training_file=file_id)
        (doomed / "model.safetensors").write_bytes(b"not weights")
        assert await worker.poll_once() is True
        job = await get_job(client, tenant, created["id"])
        assert job["status"] == "failed"
        assert job["error"]["code"] == "training_error"
        assert job["error"]["message"].startswith("Training failed:")
        assert job["finished_at"] is not None
