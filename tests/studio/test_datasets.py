"""Datasets from e-mail history: the builder's rules on the sample history, and the API."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from service.studio.datasets import EmailRecord, Options, build, grouped_split, thread_key
from service.studio.prompts import SYSTEM_PROMPTS
from service.studio.redaction import PLACEHOLDER, Redactor
from tests.factories import assert_envelope, make_tenant, upload
from tests.processes import SHARED_DIR

HISTORY = SHARED_DIR / "data" / "emails" / "history.jsonl"
pytestmark = pytest.mark.skipif(not HISTORY.is_file(), reason=f"no history at {HISTORY}")
DATASETS = "/v1/email/datasets"


def history() -> list[dict]:
    return [json.loads(line) for line in HISTORY.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def test_rating_filter_counts_and_grouped_split(redactor):
    rows = history()
    records = [EmailRecord.model_validate(r) for r in rows]
    built = build(records, Options(), redactor)

    good = [r for r in rows if r["rating"] >= 4]
    assert built.report["n_records"] == len(rows)
    assert built.report["n_kept"] == len(good) == len(built.training) + len(built.validation)
    assert built.report["dropped"] == {"low_rating": len(rows) - len(good)}
    assert built.report["by_language"] == dict(sorted(Counter(r["language"] for r in good).items()))
    assert 0.05 * len(good) <= len(built.validation) <= 0.15 * len(good)

    only_best = build(records, Options(min_rating=5, redact=False), None)
    assert only_best.report["n_kept"] == sum(r["rating"] == 5 for r in rows)


def test_the_split_never_cuts_a_users_thread():
    records = [
        EmailRecord(id=f"m{i}", user_id=f"u{i % 3}", subject=subject, body="x", rating=5)
        for i, subject in enumerate(["Devis", "RE: Devis", "Re : devis", "Offre", "TR: Offre"] * 8)
    ]
    for fraction in (0.1, 0.3, 0.5):
        training, validation = grouped_split(records, fraction)
        assert sorted(training + validation) == list(range(len(records)))
        assert training and validation
        held_out = {f"{records[i].user_id}|{thread_key(records[i])}" for i in validation}
        assert all(
            f"{records[i].user_id}|{thread_key(records[i])}" not in held_out for i in training
        )
    assert thread_key(records[0]) == thread_key(records[2].model_copy(update={"user_id": "u0"}))


def test_department_prompts_follow_each_mails_language(redactor):
    rows = {r["id"]: r for r in history()}
    built = build([EmailRecord.model_validate(r) for r in rows.values()], Options(), redactor)
    seen = set()
    for row in built.training + built.validation:
        system, user, assistant = row["messages"]
        language = "fr" if user["content"].startswith("Écrire un email ") else "en"
        assert user["content"].startswith(("Écrire un email ", "Write an email ("))
        department = next(d for d, p in SYSTEM_PROMPTS.items() if system["content"] == p[language])
        seen.add((department, language))
        assert assistant["content"].split("\n\n", 1)[1].strip()  # subject, blank line, body
    assert seen == {(d, lang) for d in SYSTEM_PROMPTS for lang in ("fr", "en")}


def test_personal_data_is_replaced_before_anything_is_written(redactor):
    rows = history()
    built = build([EmailRecord.model_validate(r) for r in rows], Options(), redactor)
    text = json.dumps(built.training + built.validation, ensure_ascii=False)
    for secret in (
        "romain.tessereau@brisevent.example.fr",
        "+33 6 00 00 00 23",
        "Okafor",
        "FR76 0000 0000 0000 0000 0000 271",
        "Julien Marsac",
    ):
        assert secret not in text
    assert PLACEHOLDER.search(text)
    # The closing formula and the (redacted) signing name stay; the contact card goes.
    first = built.training[0]["messages"][2]["content"] if built.training else ""
    assert first.rstrip().endswith("[NOM_2]") or "regards" in text.lower()
    assert "Sales Manager\nAtelier Brisevent" not in text
    assert built.report["redaction"]["replaced"]["PERSON"] > 100


def test_cleaning_drops_empty_duplicate_and_wrong_language_mails(redactor):
    base = history()[0]
    body = base["body"]
    records = [
        EmailRecord.model_validate(base),
        EmailRecord.model_validate({**base, "id": "dup", "body": body.replace("Okafor", "Adams")}),
        EmailRecord.model_validate(
            {**base, "id": "same", "body": body.replace("Following", "FOLLOWING")}
        ),
        EmailRecord.model_validate({**base, "id": "empty", "body": "Merci !\n\n> old quoted text"}),
        EmailRecord.model_validate(
            {
                **base,
                "id": "fr-said-en",
                "language": "en",
                "subject": "Votre commande",
                "body": "Bonjour,\n\nVotre commande de bureaux est confirmée et sera livrée "
                "mardi prochain dans vos locaux.\n\nBien cordialement,\n\nLéa",
            }
        ),
    ]
    built = build(records, Options(), redactor)
    reasons = {d["id"]: d["reason"] for d in built.report["dropped_records"]}
    assert reasons == {
        "dup": "near_duplicate",
        "same": "duplicate",
        "empty": "empty",
        "fr-said-en": "language_mismatch",
    }
    assert built.report["language_mismatches"] == [
        {"id": "fr-said-en", "declared": "en", "detected": "fr"}
    ]


async def test_dataset_api_builds_files_the_jobs_api_accepts(client, database):
    tenant = await make_tenant(database)
    response = await client.post(DATASETS, headers=tenant.headers, json={"emails": history()})
    assert response.status_code == 200, response.text
    dataset = response.json()
    assert dataset["object"] == "email.dataset" and dataset["id"].startswith("emailds_")
    assert dataset["redacted"] is True
    report = dataset["report"]
    assert report["n_training"] + report["n_validation"] == report["n_kept"] == 90
    assert report["estimates"]["tokens"]["total"] > 0
    assert {m["model"] for m in report["estimates"]["models"]} >= {"gpt-4o-mini-2024-07-18"}

    lines = (
        await client.get(f"/v1/files/{dataset['training_file']}/content", headers=tenant.headers)
    ).text.splitlines()
    assert len(lines) == report["n_training"]
    job = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={
            "model": "gpt-4o-mini-2024-07-18",
            "training_file": dataset["training_file"],
            "validation_file": dataset["validation_file"],
        },
    )
    assert job.status_code == 200, job.text

    again = await client.get(f"{DATASETS}/{dataset['id']}", headers=tenant.headers)
    assert again.json() == dataset
    listed = (await client.get(DATASETS, headers=tenant.headers)).json()
    assert [d["id"] for d in listed["data"]] == [dataset["id"]]

    other = await make_tenant(database, "other")
    assert_envelope(await client.get(f"{DATASETS}/{dataset['id']}", headers=other.headers), 404)
    assert (await client.get(DATASETS, headers=other.headers)).json()["data"] == []


async def test_unredacted_datasets_only_train_where_data_stays(client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        DATASETS, headers=tenant.headers, json={"emails": history(), "redact": False}
    )
    dataset = response.json()
    assert dataset["redacted"] is False
    content = (
        await client.get(f"/v1/files/{dataset['training_file']}/content", headers=tenant.headers)
    ).text
    assert "Julien Marsac" in content
    # The test engine stands for a provider: it does not keep data local.
    refused = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": dataset["training_file"]},
    )
    assert assert_envelope(refused, 400)["code"] == "personal_data_not_redacted"


async def test_dataset_from_an_uploaded_history_file_with_settings(client, database):
    tenant = await make_tenant(database)
    prompt = "Tu écris les mails du service support de Nuagéo."
    updated = await client.post(
        "/v1/email/settings",
        headers=tenant.headers,
        json={"system_prompts": {"support": {"fr": prompt}}},
    )
    assert updated.status_code == 200 and updated.json()["redact"] is True
    uploaded = await upload(
        client, tenant, HISTORY.read_bytes(), purpose="user_data", filename="history.jsonl"
    )
    assert uploaded.status_code == 200, uploaded.text
    response = await client.post(
        DATASETS,
        headers=tenant.headers,
        json={"file_id": uploaded.json()["id"], "department": "support", "min_rating": 4},
    )
    assert response.status_code == 200, response.text
    dataset = response.json()
    content = (
        await client.get(f"/v1/files/{dataset['training_file']}/content", headers=tenant.headers)
    ).text
    systems = {json.loads(line)["messages"][0]["content"] for line in content.splitlines()}
    assert prompt in systems and SYSTEM_PROMPTS["support"]["en"] in systems
    assert systems <= {prompt, SYSTEM_PROMPTS["support"]["en"]}
    assert dataset["report"]["dropped"]["other_department"] > 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, None),
        ({"emails": [], "file_id": "file-x"}, None),
        ({"emails": [{"id": "a", "body": "x", "rating": 9}]}, None),
        ({"emails": [{"id": "a", "body": "Trop court", "rating": 2}]}, "empty_dataset"),
        ({"file_id": "file-nope"}, None),
    ],
)
async def test_bad_dataset_requests_are_refused_and_store_nothing(
    client, database, settings, body, code
):
    tenant = await make_tenant(database)
    response = await client.post(DATASETS, headers=tenant.headers, json=body)
    error = assert_envelope(
        response, 404 if body.get("file_id") == "file-nope" and "emails" not in body else 400
    )
    if code:
        assert error["code"] == code
    assert (await client.get("/v1/files", headers=tenant.headers)).json()["data"] == []
    assert (await client.get(DATASETS, headers=tenant.headers)).json()["data"] == []


async def test_a_bad_line_in_a_history_file_is_named(client, database):
    tenant = await make_tenant(database)
    lines = HISTORY.read_text(encoding="utf-8").splitlines()
    lines[2] = json.dumps({"id": "em-x", "rating": "excellent", "body": "x"})
    uploaded = await upload(client, tenant, "\n".join(lines).encode(), purpose="user_data")
    response = await client.post(
        DATASETS, headers=tenant.headers, json={"file_id": uploaded.json()["id"]}
    )
    error = assert_envelope(response, 400)
    assert error["code"] == "invalid_history_record" and "Line 3" in error["message"]
