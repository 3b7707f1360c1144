"""Scope aliases: chat completions and jobs accept them; promotion, rollback and history."""

from __future__ import annotations

from tests.factories import assert_envelope, chat_file, make_file, make_tenant
from tests.fake_engine import run_to_success

ALIASES = "/v1/email/aliases"
BASE = "gpt-4o-mini-2024-07-18"


async def train(client, database, tenant) -> str:
    file_id = await make_file(client, tenant, chat_file(10))
    response = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": BASE, "training_file": file_id},
    )
    assert response.status_code == 200, response.text
    model, _ = await run_to_success(database)
    return model


async def ask(client, tenant, model: str):
    return await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
    )


async def test_promote_answer_through_the_alias_roll_back_and_read_the_history(client, database):
    tenant = await make_tenant(database)
    first, second = await train(client, database, tenant), await train(client, database, tenant)
    alias = "email:department:sales"
    assert_envelope(await ask(client, tenant, alias), 404)

    for model in (first, second):
        promoted = await client.post(
            f"{ALIASES}/department:sales/promote",
            headers=tenant.headers,
            json={"model": model, "reason": "evaluation passed"},
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json() | {"updated_at": 0} == {
            "object": "email.alias",
            "scope": "department:sales",
            "alias": alias,
            "model": model,
            "updated_at": 0,
        }
    answer = await ask(client, tenant, alias)
    assert answer.status_code == 200 and answer.json()["model"] == second

    # Jobs accept the alias too: they start from the model it names.
    file_id = await make_file(client, tenant, chat_file(10))
    job = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": alias, "training_file": file_id},
    )
    assert job.status_code == 200 and job.json()["model"] == second

    rolled = await client.post(
        f"{ALIASES}/department:sales/rollback",
        headers=tenant.headers,
        json={"reason": "complaints"},
    )
    assert rolled.json()["model"] == first
    assert (await ask(client, tenant, alias)).json()["model"] == first
    again = await client.post(
        f"{ALIASES}/department:sales/rollback", headers=tenant.headers, json={}
    )
    assert assert_envelope(again, 400)["code"] == "nothing_to_roll_back"

    history = (
        await client.get(f"{ALIASES}/department:sales/history", headers=tenant.headers)
    ).json()["data"]
    assert [(c["action"], c["model"], c["previous_model"]) for c in history] == [
        ("rollback", first, second),
        ("promote", second, first),
        ("promote", first, None),
    ]
    listed = (await client.get(ALIASES, headers=tenant.headers)).json()["data"]
    assert [(a["scope"], a["model"]) for a in listed] == [("department:sales", first)]


async def test_aliases_are_per_project_and_refuse_bad_input(client, database):
    tenant = await make_tenant(database)
    other = await make_tenant(database, "other")
    model = await train(client, database, tenant)
    await client.post(
        f"{ALIASES}/user:usr_1003/promote", headers=tenant.headers, json={"model": model}
    )

    assert_envelope(await client.get(f"{ALIASES}/user:usr_1003", headers=other.headers), 404)
    assert_envelope(await ask(client, other, "email:user:usr_1003"), 404)
    stolen = await client.post(
        f"{ALIASES}/user:usr_1003/promote", headers=other.headers, json={"model": model}
    )
    assert assert_envelope(stolen, 400)["code"] == "model_not_found"
    bad_scope = await client.post(
        f"{ALIASES}/team:x/promote", headers=tenant.headers, json={"model": model}
    )
    assert assert_envelope(bad_scope, 400)["code"] == "invalid_scope"
    alias_as_model = await client.post(
        f"{ALIASES}/user:usr_1/promote",
        headers=tenant.headers,
        json={"model": "email:user:usr_1003"},
    )
    assert_envelope(alias_as_model, 400)
    assert (await client.get(f"{ALIASES}/user:usr_1003", headers=tenant.headers)).json()[
        "model"
    ] == model
