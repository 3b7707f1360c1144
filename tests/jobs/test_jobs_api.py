"""Jobs over HTTP: creation rules, listing, controls and events."""

from __future__ import annotations

import asyncio

import pytest

from service.models.registry import BaseModelSpec
from tests.factories import (
    assert_envelope,
    chat_file,
    jsonl,
    make_file,
    make_job,
    make_tenant,
    preference_example,
    reinforcement_example,
    upload,
)
from tests.fake_engine import FAKE

JOBS = "/v1/fine_tuning/jobs"


async def create(client, tenant, **body):
    return await client.post(JOBS, headers=tenant.headers, json=body)


async def test_create_supervised_job_has_openai_shape(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    response = await create(
        client, tenant, model="gpt-4o-mini", training_file=file_id, suffix="support-fr",
        seed=42, metadata={"team": "support"},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"].startswith("ftjob-") and len(job["id"]) == len("ftjob-") + 24
    assert job["object"] == "fine_tuning.job"
    assert job["model"] == "gpt-4o-mini-2024-07-18"  # alias resolved to the snapshot
    assert job["status"] == "queued"
    assert job["organization_id"] == "org-personal"
    assert job["seed"] == 42
    assert job["user_provided_suffix"] == "support-fr"
    assert job["metadata"] == {"team": "support"}
    assert job["hyperparameters"] == {
        "batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto",
    }
    assert job["method"]["type"] == "supervised"
    assert job["fine_tuned_model"] is None and job["finished_at"] is None
    assert job["error"] is None and job["result_files"] == []
    assert isinstance(job["created_at"], int)


async def test_seed_is_generated_when_omitted(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    assert isinstance(job["seed"], int) and 0 <= job["seed"] < 2**31


async def test_deprecated_hyperparameters_become_the_supervised_method(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant, hyperparameters={"n_epochs": 4})
    assert job["hyperparameters"]["n_epochs"] == 4
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 4


async def test_hyperparameters_in_both_places_are_refused(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    response = await create(
        client, tenant, model="gpt-4o-mini", training_file=file_id,
        hyperparameters={"n_epochs": 2}, method={"type": "supervised"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "hyperparameters"


async def test_dpo_job_on_a_preference_file(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, jsonl([preference_example(i) for i in range(10)]))
    response = await create(
        client, tenant, model="gpt-4.1-mini", training_file=file_id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
    )
    assert response.status_code == 200, response.text
    hyper = response.json()["method"]["dpo"]["hyperparameters"]
    assert hyper["beta"] == 0.2 and hyper["n_epochs"] == "auto"


async def test_unknown_model_points_to_the_models_list(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    response = await create(client, tenant, model="gpt-9-ultra", training_file=file_id)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model" and "GET /v1/models" in error["message"]


async def test_method_not_supported_by_the_model(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, jsonl([reinforcement_example(i) for i in range(10)]))
    grader = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
              "reference": "{{item.reference_answer}}", "operation": "eq"}
    response = await create(
        client, tenant, model="gpt-4o-mini", training_file=file_id,
        method={"type": "reinforcement", "reinforcement": {"grader": grader}},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "method.type"


async def test_reinforcement_job_with_grader_on_a_model_that_supports_it(
    client, database, registry
):
    registry.add(BaseModelSpec(
        id="local-tiny", engine=FAKE, methods=frozenset({"supervised", "reinforcement"}),
        max_tokens_per_example=2048, tokenizer="tiktoken:o200k_base", created=0, owned_by="local",
    ))
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant, jsonl([reinforcement_example(i) for i in range(10)]))
    grader = {
        "type": "multi", "name": "combo", "calculate_output": "0.5 * a + 0.5 * b",
        "graders": {
            "a": {"type": "string_check", "name": "a", "input": "{{sample.output_text}}",
                  "reference": "{{item.reference_answer}}", "operation": "ilike"},
            "b": {"type": "text_similarity", "name": "b", "input": "{{sample.output_text}}",
                  "reference": "{{item.reference_answer}}", "evaluation_metric": "fuzzy_match"},
        },
    }
    response = await create(
        client, tenant, model="local-tiny", training_file=file_id,
        method={"type": "reinforcement", "reinforcement": {"grader": grader}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["method"]["reinforcement"]["grader"]["type"] == "multi"


@pytest.mark.parametrize(
    ("method", "param"),
    [
        ({"type": "reinforcement"}, "method"),
        ({"type": "dpo", "supervised": {}}, "method"),
        ({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
         "method.supervised.hyperparameters.n_epochs"),
        ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}},
         "method.dpo.hyperparameters.beta"),
        ({"type": "sft"}, "method.type"),
    ],
)
async def test_bad_methods_are_refused_with_param(client, database, method, param):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    response = await create(client, tenant, model="gpt-4o-mini", training_file=file_id,
                            method=method)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_training_file_must_exist_have_the_purpose_and_fit_the_method(client, database):
    tenant = await make_tenant(database)
    missing = await create(client, tenant, model="gpt-4o-mini", training_file="file-nope")
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "training_file"

    batch = (await upload(client, tenant, b'{"a": 1}\n', purpose="batch")).json()["id"]
    wrong_purpose = await create(client, tenant, model="gpt-4o-mini", training_file=batch)
    assert wrong_purpose.status_code == 400
    assert wrong_purpose.json()["error"]["code"] == "invalid_file_purpose"

    chat = await make_file(client, tenant)
    wrong_format = await create(client, tenant, model="gpt-4o-mini", training_file=chat,
                                method={"type": "dpo"})
    assert wrong_format.status_code == 400
    assert wrong_format.json()["error"]["param"] == "training_file"

    validation = await create(client, tenant, model="gpt-4o-mini", training_file=chat,
                              validation_file="file-nope")
    assert validation.status_code == 400
    assert validation.json()["error"]["param"] == "validation_file"
    assert (await client.get(JOBS, headers=tenant.headers)).json()["data"] == []


async def test_list_pages_newest_first_and_filters_metadata(client, database):
    tenant = await make_tenant(database)
    file_id = await make_file(client, tenant)
    ids = []
    for i in range(5):
        job = await make_job(client, tenant, training_file=file_id,
                             metadata={"team": "a b" if i % 2 else "c"})
        ids.append(job["id"])
    first = (await client.get(JOBS, headers=tenant.headers, params={"limit": 2})).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    rest = (await client.get(JOBS, headers=tenant.headers,
                             params={"limit": 10, "after": first["last_id"]})).json()
    assert [j["id"] for j in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    filtered = (await client.get(JOBS, headers=tenant.headers,
                                 params={"metadata[team]": "a b"})).json()
    assert [j["id"] for j in filtered["data"]] == [ids[3], ids[1]]
    none = (await client.get(JOBS, headers=tenant.headers, params={"metadata": "null"})).json()
    assert none["data"] == []


@pytest.mark.parametrize(
    "query",
    [
        "metadata[i",  # an unclosed bracket
        "metadata[]=1",  # no key
        "metadata_team=a",
        "metadata=nothing",
        "metadata=null&metadata[team]=a",
        'metadata["x"]=1',
    ],
)
async def test_a_malformed_metadata_filter_is_refused_not_ignored(client, database, query):
    tenant = await make_tenant(database)
    response = await client.get(f"{JOBS}?{query}", headers=tenant.headers)
    assert assert_envelope(response, 400)["param"] == "metadata"


async def test_cancel_pause_resume(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    url = f"{JOBS}/{job['id']}"
    paused = await client.post(f"{url}/pause", headers=tenant.headers)
    assert paused.json()["status"] == "paused"
    assert (await client.post(f"{url}/pause", headers=tenant.headers)).json()["status"] == "paused"
    resumed = await client.post(f"{url}/resume", headers=tenant.headers)
    assert resumed.json()["status"] == "queued"
    again = await client.post(f"{url}/resume", headers=tenant.headers)
    assert again.status_code == 400 and again.json()["error"]["code"] == "job_not_paused"
    cancelled = (await client.post(f"{url}/cancel", headers=tenant.headers)).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    # Cancel is idempotent; pausing or resuming a finished job is refused.
    repeat = await client.post(f"{url}/cancel", headers=tenant.headers)
    assert repeat.status_code == 200 and repeat.json()["status"] == "cancelled"
    for action in ("pause", "resume"):
        refused = await client.post(f"{url}/{action}", headers=tenant.headers)
        assert refused.status_code == 400, action


async def test_events_tell_the_story_in_openai_wording(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    await client.post(f"{JOBS}/{job['id']}/cancel", headers=tenant.headers)
    events = (await client.get(f"{JOBS}/{job['id']}/events", headers=tenant.headers)).json()
    messages = [e["message"] for e in reversed(events["data"])]
    assert messages == [
        f"Created fine-tuning job: {job['id']}",
        f"Validating training file: {job['training_file']}",
        "Files validated, moving job to queued state",
        "Fine-tuning job cancelled",
    ]
    event = events["data"][0]
    assert event["object"] == "fine_tuning.job.event" and event["id"].startswith("ftevent-")
    assert event["level"] == "info" and event["type"] == "message"
    page = (await client.get(f"{JOBS}/{job['id']}/events", headers=tenant.headers,
                             params={"limit": 1, "after": event["id"]})).json()
    assert page["data"][0]["id"] == events["data"][1]["id"] and page["has_more"] is True


async def test_training_data_without_trainable_turns_is_refused_with_the_line(client, database):
    tenant = await make_tenant(database)
    lines = chat_file(12).decode().splitlines()
    lines[4] = lines[4].replace('"role": "assistant"', '"role": "assistant", "weight": 0')
    response = await upload(client, tenant, ("\n".join(lines) + "\n").encode())
    assert response.status_code == 400
    error = response.json()["error"]
    assert "line 5" in error["message"].lower() and error["param"] == "file"
    assert (await client.get("/v1/files", headers=tenant.headers)).json()["data"] == []


async def test_concurrent_cancels_all_answer_the_cancelled_job(client, database):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    responses = await asyncio.gather(*(
        client.post(f"{JOBS}/{job['id']}/cancel", headers=tenant.headers) for _ in range(8)
    ))
    assert [r.status_code for r in responses] == [200] * 8
    assert {r.json()["status"] for r in responses} == {"cancelled"}
    events = (await client.get(f"{JOBS}/{job['id']}/events", headers=tenant.headers)).json()
    assert [e["message"] for e in events["data"]].count("Fine-tuning job cancelled") == 1
