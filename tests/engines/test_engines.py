"""Engines behind one interface: the registry they make, and the API reaching each through it."""

from __future__ import annotations

import json

import pytest

from service.engines.base import Engines
from service.models.registry import BaseModelSpec
from tests.factories import make_job, make_tenant
from tests.fake_engine import BASES, FakeEngine, run_to_success

SPEC = BaseModelSpec(
    id="m", methods=frozenset({"supervised"}), max_tokens_per_example=10,
    tokenizer="tiktoken:o200k_base", created=0, aliases=("m-alias",),
)


def test_each_model_belongs_to_one_engine_and_is_stamped_with_it():
    engines = Engines([FakeEngine([SPEC], name="a"), FakeEngine(BASES, name="b")])
    assert engines.registry.resolve("m-alias").engine == "a"
    assert engines.registry.resolve("gpt-4o-mini").engine == "b"
    with pytest.raises(ValueError, match="offered by both 'a' and 'b'"):
        Engines([FakeEngine([SPEC], name="a"), FakeEngine([SPEC], name="b")])
    with pytest.raises(ValueError, match="two engines are named 'a'"):
        Engines([FakeEngine([SPEC], name="a"), FakeEngine(BASES, name="a")])


async def test_client_controls_reach_the_jobs_engine_before_they_are_recorded(
    client, database, engines
):
    tenant = await make_tenant(database)
    job = await make_job(client, tenant)
    for action, status in (("pause", "paused"), ("resume", "queued"), ("cancel", "cancelled")):
        response = await client.post(
            f"/v1/fine_tuning/jobs/{job['id']}/{action}", headers=tenant.headers
        )
        assert response.json()["status"] == status
    # A repeated cancel answers the job as it is, without asking the engine again.
    await client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    fake = engines.get("fake")
    assert fake.controls == [(job["id"], "pause"), (job["id"], "resume"), (job["id"], "cancel")]


async def test_completions_and_deletion_of_a_model_go_to_the_engine_that_made_it(
    client, database, engines
):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    model, _ = await run_to_success(database)
    request = {"model": model, "messages": [{"role": "user", "content": "Bonjour"}]}
    plain = await client.post("/v1/chat/completions", headers=tenant.headers, json=request)
    assert plain.json()["choices"][0]["message"]["content"] == "echo: Bonjour"
    assert plain.json()["model"] == model

    streamed = await client.post(
        "/v1/chat/completions", headers=tenant.headers, json={**request, "stream": True}
    )
    lines = [line for line in streamed.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: Bonjour"

    deleted = await client.delete(f"/v1/models/{model}", headers=tenant.headers)
    assert deleted.json() == {"id": model, "object": "model", "deleted": True}
    assert engines.get("fake").deleted == [model]


async def test_a_model_whose_engine_is_gone_answers_a_clear_400(client, database, engines):
    tenant = await make_tenant(database)
    await make_job(client, tenant)
    model, _ = await run_to_success(database)
    engines._engines.pop("fake")  # the provider was removed from the configuration
    response = await client.post(
        "/v1/chat/completions", headers=tenant.headers,
        json={"model": model, "messages": [{"role": "user", "content": "Bonjour"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_served"
    assert "'fake' is not configured" in response.json()["error"]["message"]
