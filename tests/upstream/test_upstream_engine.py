"""The upstream engine against the OpenAI-wire double over real HTTP: a job created here runs
there, and everything it does there is mirrored here once."""

from __future__ import annotations

import json

from openai import AsyncOpenAI

from tests.factories import chat_file, make_file, make_job, make_tenant
from tests.upstream.conftest import mirrored_events, settle, sync_now, upstream_id

JOBS = "/v1/fine_tuning/jobs"


async def test_a_job_runs_upstream_and_is_mirrored_once(client, database, double, upstream):
    tenant = await make_tenant(database)
    created = await make_job(
        client,
        tenant,
        model="gpt-4o-mini",
        suffix="mails",
        seed=7,
        metadata={"team": "sales"},
        validation_file=await make_file(client, tenant, chat_file(10)),
    )
    await settle(upstream)
    remote_id = await upstream_id(database, created["id"])
    assert remote_id is not None and remote_id != created["id"]  # our ids stay ours
    remote = double.jobs[remote_id].body
    assert remote["model"] == "gpt-4o-mini-2024-07-18" and remote["seed"] == 7
    assert remote["user_provided_suffix"] == "mails"
    assert remote["metadata"] == {"team": "sales", "ft_job_id": created["id"]}
    assert remote["method"]["type"] == "supervised"
    # Each file went up once, under our id.
    assert sorted(f["filename"] for f in double.files.values()) == sorted(
        [f"{created['training_file']}.jsonl", f"{created['validation_file']}.jsonl"]
    )

    for _ in range(6):  # validating -> queued -> running -> 3 steps -> succeeded
        await double.tick(remote_id)
        await sync_now(upstream, database, created["id"])
    await sync_now(upstream, database, created["id"])  # nothing new: nothing doubled

    job = (await client.get(f"{JOBS}/{created['id']}", headers=tenant.headers)).json()
    assert job["status"] == "succeeded"
    assert job["fine_tuned_model"] == double.jobs[remote_id].body["fine_tuned_model"]
    assert job["trained_tokens"] == 3000
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
    expected = [(e["id"], e["message"]) for e in double.jobs[remote_id].events]
    assert await mirrored_events(database, created["id"]) == expected
    metrics = (await client.get(f"{JOBS}/{created['id']}/metrics", headers=tenant.headers)).json()
    assert [p["step"] for p in metrics["data"]] == [1, 2, 3]

    checkpoints = (
        await client.get(f"{JOBS}/{created['id']}/checkpoints", headers=tenant.headers)
    ).json()["data"]
    assert [c["step_number"] for c in checkpoints] == [3, 2, 1]
    assert checkpoints[0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-3")
    assert checkpoints[0]["fine_tuning_job_id"] == created["id"]

    (results,) = job["result_files"]
    content = await client.get(f"/v1/files/{results}/content", headers=tenant.headers)
    assert content.text.startswith("step,train_loss\n1,")
    models = (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
    assert job["fine_tuned_model"] in [m["id"] for m in models]


async def test_completions_and_deletion_are_forwarded(client, database, double, upstream):
    tenant = await make_tenant(database)
    created = await make_job(client, tenant, model="gpt-4o-mini")
    await settle(upstream)
    remote_id = await upstream_id(database, created["id"])
    await double.run_to_end(remote_id)
    await sync_now(upstream, database, created["id"])
    model = (await client.get(f"{JOBS}/{created['id']}", headers=tenant.headers)).json()[
        "fine_tuned_model"
    ]
    request = {"model": model, "messages": [{"role": "user", "content": "Merci Mme Durand"}]}
    plain = await client.post("/v1/chat/completions", headers=tenant.headers, json=request)
    assert plain.status_code == 200, plain.text
    assert (
        plain.json()["choices"][0]["message"]["content"] == f"Réponse de {model}: Merci Mme Durand"
    )

    streamed = await client.post(
        "/v1/chat/completions", headers=tenant.headers, json={**request, "stream": True}
    )
    events = [e for e in streamed.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == plain.json()["choices"][0]["message"]["content"]

    stranger = await make_tenant(database, "stranger")
    refused = await client.post("/v1/chat/completions", headers=stranger.headers, json=request)
    assert refused.status_code == 404

    deleted = await client.delete(f"/v1/models/{model}", headers=tenant.headers)
    assert deleted.status_code == 200 and double.deleted_models == [model]


async def test_controls_go_upstream_and_its_log_tells_them(client, database, double, upstream):
    tenant = await make_tenant(database)
    created = await make_job(client, tenant, model="gpt-4o-mini")
    await settle(upstream)
    remote_id = await upstream_id(database, created["id"])
    await double.tick(remote_id)
    await double.tick(remote_id)  # running there
    paused = await client.post(f"{JOBS}/{created['id']}/pause", headers=tenant.headers)
    assert paused.json()["status"] == "paused"
    assert double.jobs[remote_id].body["status"] == "paused"
    resumed = await client.post(f"{JOBS}/{created['id']}/resume", headers=tenant.headers)
    assert resumed.json()["status"] == "queued"
    cancelled = await client.post(f"{JOBS}/{created['id']}/cancel", headers=tenant.headers)
    assert cancelled.json()["status"] == "cancelled"
    assert double.jobs[remote_id].body["status"] == "cancelled"
    await upstream.sync.drain()
    await sync_now(upstream, database, created["id"])
    events = (
        await client.get(
            f"{JOBS}/{created['id']}/events", headers=tenant.headers, params={"limit": 100}
        )
    ).json()["data"]
    messages = [e["message"] for e in events]
    # Told once each, in the provider's words.
    assert messages.count("Fine-tuning job paused") == 1
    assert messages.count("Fine-tuning job resumed") == 1
    assert messages.count("Fine-tuning job cancelled") == 1


async def test_a_refusal_upstream_fails_the_job_with_its_message(
    client, database, double, upstream
):
    tenant = await make_tenant(database)
    double.files.clear()
    created = await make_job(client, tenant, model="gpt-4o-mini")
    # The double forgets uploads as they come: its create refuses the training file.
    original = double._store_file
    double._store_file = lambda *a: {**original(*a), "id": "file-gone"}  # type: ignore[method-assign]
    await settle(upstream)
    job = (await client.get(f"{JOBS}/{created['id']}", headers=tenant.headers)).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_training_file"
    assert "refused the job" in job["error"]["message"]
    assert double.api_key not in json.dumps(job)


async def test_the_sdk_sees_the_provider_models_and_their_dates(client, database, double):
    tenant = await make_tenant(database)
    models = {
        m["id"]: m for m in (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
    }
    assert models["gpt-4o-mini-2024-07-18"]["shutdown_date"] == "2099-12-31"
    assert models["gpt-4o-mini-2024-07-18"]["training_cutoff"] == "2099-12-01"
    assert isinstance(AsyncOpenAI, type)
