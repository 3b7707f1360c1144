"""Preference pairs to a DPO file (the seed's createPreferenceData)."""

from __future__ import annotations

import json

import pytest

from service.studio.prompts import SYSTEM_PROMPTS
from tests.factories import assert_envelope, make_tenant, upload
from tests.processes import SHARED_DIR

PAIRS = SHARED_DIR / "data" / "emails" / "preferences.jsonl"
pytestmark = pytest.mark.skipif(not PAIRS.is_file(), reason=f"no pairs at {PAIRS}")


def pairs() -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]


async def test_pairs_become_a_dpo_file_that_a_dpo_job_accepts(client, database):
    tenant = await make_tenant(database)
    response = await client.post(
        "/v1/email/preferences", headers=tenant.headers, json={"pairs": pairs()}
    )
    assert response.status_code == 200, response.text
    dataset = response.json()
    assert dataset["method"] == "dpo"
    report = dataset["report"]
    assert report["n_kept"] == len(pairs()) == report["n_training"] + report["n_validation"]
    assert report["redaction"]["replaced"]["PERSON"] > 0

    lines = (
        await client.get(f"/v1/files/{dataset['training_file']}/content", headers=tenant.headers)
    ).text.splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(set(row) == {"input", "preferred_output", "non_preferred_output"} for row in rows)
    system, user = rows[0]["input"]["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"] in {p[lang] for p in SYSTEM_PROMPTS.values() for lang in ("fr", "en")}
    assert "Yanis Belkacem" not in "\n".join(lines) and "Rivet" not in "\n".join(lines)

    job = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={
            "model": "gpt-4o-mini-2024-07-18",
            "training_file": dataset["training_file"],
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        },
    )
    assert job.status_code == 200, job.text
    supervised = await client.post(
        "/v1/fine_tuning/jobs",
        headers=tenant.headers,
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": dataset["training_file"]},
    )
    assert assert_envelope(supervised, 400)["code"] == "invalid_format_for_method"


async def test_pairs_from_a_file_filtered_by_department_and_bad_pairs(client, database):
    tenant = await make_tenant(database)
    uploaded = await upload(client, tenant, PAIRS.read_bytes(), purpose="user_data")
    response = await client.post(
        "/v1/email/preferences",
        headers=tenant.headers,
        json={"file_id": uploaded.json()["id"], "department": "sales", "validation_fraction": 0},
    )
    dataset = response.json()
    assert dataset["report"]["n_kept"] == sum(p["department"] == "sales" for p in pairs())
    assert dataset["validation_file"] is None

    same = [{"prompt": "p", "preferred_completion": "a", "non_preferred_completion": "a"}] * 12
    refused = await client.post(
        "/v1/email/preferences", headers=tenant.headers, json={"pairs": same}
    )
    assert assert_envelope(refused, 400)["code"] == "empty_dataset"
    missing = await client.post(
        "/v1/email/preferences", headers=tenant.headers, json={"pairs": [{"prompt": "p"}]}
    )
    assert_envelope(missing, 400)
