"""Department and personal models, feedback, and the retraining it starts exactly once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from service.studio.learning import Watcher
from tests.factories import Tenant, assert_envelope, make_tenant
from tests.fake_engine import run_to_success
from tests.processes import SHARED_DIR

EMAILS = SHARED_DIR / "data" / "emails"
pytestmark = pytest.mark.skipif(not EMAILS.is_dir(), reason=f"no sample data at {EMAILS}")
BASE = "gpt-4o-mini-2024-07-18"
SUPPORT = "department:support"


def history() -> list[dict]:
    return [json.loads(line) for line in (EMAILS / "history.jsonl").read_text("utf-8").splitlines()]


def feedback() -> list[dict]:
    return [
        json.loads(line) for line in (EMAILS / "feedback.jsonl").read_text("utf-8").splitlines()
    ]


async def settle(app) -> None:
    """Move the studio's runs until nothing moves (the test app runs no watcher of its own)."""
    while await app.state.watcher.poll_once():
        pass


async def support_with_a_model(app, client, database, tenant: Tenant, threshold: int) -> str:
    """Give support a promoted first model and a feedback threshold; return the model.

    The history is known too (a dataset remembers it), so feedback can name its mails."""
    admin = await make_tenant(database, admin=True)
    await client.post("/v1/email/datasets", headers=tenant.headers, json={"emails": history()})
    trained = await client.post(
        "/v1/email/models/departments",
        headers=tenant.headers,
        json={"emails": history(), "model": BASE, "departments": ["support"]},
    )
    assert trained.status_code == 200, trained.text
    model, _ = await run_to_success(database)
    await settle(app)
    await client.post(
        "/v1/email/settings",
        headers=admin.headers,
        json={"feedback_thresholds": {SUPPORT: threshold}},
    )
    return model


async def post_feedback(client, tenant: Tenant, row: dict):
    """Post one row of feedback.jsonl."""
    return await client.post(
        "/v1/email/feedback",
        headers=tenant.headers,
        json={k: row[k] for k in ("email_id", "rating", "improvements")},
    )


async def one_dpo_job(client, tenant: Tenant) -> dict:
    """Return the tenant's one DPO job (the scope's runs explain a failure)."""
    jobs = (await client.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()["data"]
    dpo = [j for j in jobs if j["method"]["type"] == "dpo"]
    runs = await client.get(f"/v1/email/feedback/{SUPPORT}", headers=tenant.headers)
    assert len(dpo) == 1, json.dumps(runs.json()["runs"])
    return dpo[0]


async def test_department_models_one_job_each_and_first_models_promoted(app, client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        "/v1/email/models/departments",
        headers=tenant.headers,
        json={"emails": history(), "model": BASE},
    )
    assert response.status_code == 200, response.text
    trainings = response.json()["data"]
    assert sorted(t["scope"] for t in trainings) == [
        "department:hr",
        "department:marketing",
        "department:sales",
        "department:support",
    ]
    assert all(t["job_id"] and t["job_status"] == "queued" for t in trainings)
    jobs = (await client.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()["data"]
    suffixes = sorted(j["user_provided_suffix"] for j in jobs)
    assert suffixes == ["hr-emails", "marketing-emails", "sales-emails", "support-emails"]

    for _ in trainings:
        await run_to_success(database)
    await settle(app)
    listed = (await client.get("/v1/email/aliases", headers=tenant.headers)).json()["data"]
    assert sorted(a["alias"] for a in listed) == sorted(t["alias"] for t in trainings)
    models = {
        j["id"]: j
        for j in (await client.get("/v1/fine_tuning/jobs", headers=tenant.headers)).json()["data"]
    }
    for alias in listed:
        assert alias["model"] in {j["fine_tuned_model"] for j in models.values()}


async def test_two_watchers_promote_a_first_model_once(app, client, database):
    """Each worker process runs a watcher: both see the job end, one promotes."""
    tenant = await make_tenant(database)
    await client.post(
        "/v1/email/models/departments",
        headers=tenant.headers,
        json={"emails": history(), "model": BASE, "departments": ["support"]},
    )
    model, _ = await run_to_success(database)
    first = app.state.watcher
    second = Watcher(
        database=database, engines=first.engines, settings=first.settings, redactor=first.redactor
    )
    moved = await asyncio.gather(first.poll_once(), second.poll_once())
    assert sorted(moved) == [0, 1]
    changes = (
        await client.get("/v1/email/aliases/department:support/history", headers=tenant.headers)
    ).json()["data"]
    assert [(c["action"], c["model"]) for c in changes] == [("promote", model)]
    runs = (
        await client.get("/v1/email/feedback/department:support", headers=tenant.headers)
    ).json()["runs"]
    assert [r["status"] for r in runs] == ["promoted"]


async def test_personal_model_needs_ten_usable_mails(app, client, database):
    tenant = await make_tenant(database)
    ok = await client.post(
        "/v1/email/models/personal",
        headers=tenant.headers,
        json={"emails": history(), "model": BASE, "user_id": "usr_1003"},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["alias"] == "email:user:usr_1003" and ok.json()["job_id"]
    few = [r for r in history() if r["user_id"] == "usr_1001"][:12]
    refused = await client.post(
        "/v1/email/models/personal",
        headers=tenant.headers,
        json={"emails": few, "model": BASE, "user_id": "usr_1001"},
    )
    error = assert_envelope(refused, 400)
    assert error["code"] == "too_few_examples" and "At least 10" in error["message"]


async def test_concurrent_feedback_across_the_threshold_starts_exactly_one_dpo_job(
    app, client, database
):
    tenant = await make_tenant(database)
    threshold = 15
    first = await support_with_a_model(app, client, database, tenant, threshold)

    support = {r["id"] for r in history() if r["department"] == "support"}
    posts = [f for f in feedback() if f["email_id"] in support]
    posts = (posts * 2)[:20]  # 20 posts, 13+ of them rewrites
    assert sum(bool(f["improvements"]) for f in posts) >= 10

    answers = await asyncio.gather(*(post_feedback(client, tenant, row) for row in posts))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    started = [a.json()["retraining"] for a in answers if a.json()["retraining"]]
    assert len(started) == 1 and started[0]["status"] == "starting"
    run = started[0]
    assert run["n_feedback"] >= threshold and run["n_pairs"] >= 10

    await settle(app)
    job = await one_dpo_job(client, tenant)
    assert job["model"] == first
    assert job["hyperparameters"]["n_epochs"] == 1
    assert job["method"]["dpo"]["hyperparameters"]["learning_rate_multiplier"] == 0.05
    assert job["user_provided_suffix"] == "improved-" + datetime.now(UTC).strftime("%Y%m%d")

    improved, _ = await run_to_success(database)
    await settle(app)
    status = (
        await client.get("/v1/email/feedback/department:support", headers=tenant.headers)
    ).json()
    latest = status["runs"][0]
    assert latest["id"] == run["id"] and latest["status"] == "promoted", latest
    assert latest["evaluation_id"] and status["current_model"] == improved
    assert status["pending_feedback"] == 20 - run["n_feedback"]
    evaluation = (
        await client.get(f"/v1/email/evaluations/{latest['evaluation_id']}", headers=tenant.headers)
    ).json()
    assert evaluation["summary"]["verdict"]["passed"] is True
    answer = await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={"model": "email:department:support", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert answer.json()["model"] == improved


async def test_a_rewrite_posted_twice_counts_once_toward_the_threshold(app, client, database):
    tenant = await make_tenant(database)
    await support_with_a_model(app, client, database, tenant, threshold=12)
    support = {r["id"] for r in history() if r["department"] == "support"}
    rewrites = [f for f in feedback() if f["email_id"] in support and f["improvements"]]
    # Nine rewrites, each posted twice (the same mail, the same words, spaced differently):
    # eighteen posts, nine preference pairs, one short of the ten a DPO file needs.
    posts = [r | {"improvements": "  " + r["improvements"]} for r in rewrites[:9]] + rewrites[:9]
    for row in posts:
        answer = await post_feedback(client, tenant, row)
        assert answer.status_code == 200, answer.text
        assert answer.json()["retraining"] is None
    status = (await client.get(f"/v1/email/feedback/{SUPPORT}", headers=tenant.headers)).json()
    assert status["pending_feedback"] == 18 and status["pending_rewrites"] == 9

    run = (await post_feedback(client, tenant, rewrites[9])).json()["retraining"]
    assert run is not None and run["n_feedback"] == 19 and run["n_pairs"] == 10
    await settle(app)
    job = await one_dpo_job(client, tenant)
    lines = (
        await client.get(f"/v1/files/{job['training_file']}/content", headers=tenant.headers)
    ).text
    assert len(lines.splitlines()) == 10


async def test_feedback_needs_a_known_mail(client, database):
    tenant = await make_tenant(database)
    unknown = await client.post(
        "/v1/email/feedback", headers=tenant.headers, json={"email_id": "em-0001", "rating": 5}
    )
    assert_envelope(unknown, 404)
    both = await client.post(
        "/v1/email/feedback",
        headers=tenant.headers,
        json={"email_id": "em-0001", "completion_id": "x", "rating": 5},
    )
    assert_envelope(both, 400)
    bad = await client.post(
        "/v1/email/feedback", headers=tenant.headers, json={"email_id": "em-0001", "rating": 9}
    )
    assert_envelope(bad, 400)


async def test_feedback_on_a_completion_given_through_an_alias(app, client, database):
    tenant = await make_tenant(database)
    await client.post(
        "/v1/email/models/personal",
        headers=tenant.headers,
        json={"emails": history(), "model": BASE, "user_id": "usr_1003"},
    )
    await run_to_success(database)
    await settle(app)
    answer = await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={
            "model": "email:user:usr_1003",
            "messages": [{"role": "user", "content": "Écrire un email de relance pour: devis"}],
        },
    )
    completion_id = answer.json()["id"]
    rated = await client.post(
        "/v1/email/feedback",
        headers=tenant.headers,
        json={"completion_id": completion_id, "rating": 2, "improvements": "Bonjour,\n\nMerci."},
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["scope"] == "user:usr_1003"
    status = (await client.get("/v1/email/feedback/user:usr_1003", headers=tenant.headers)).json()
    assert status["pending_feedback"] == 1 and status["pending_rewrites"] == 1
    other = await make_tenant(database, "other")
    foreign = await client.post(
        "/v1/email/feedback",
        headers=other.headers,
        json={"completion_id": completion_id, "rating": 2},
    )
    assert_envelope(foreign, 404)
