"""The default base model for real: the packaged SmolLM2-135M-Instruct is converted, fine-tuned on
ten good emails through the API, and the result answers a chat completion (about a minute on CPU).

SQLite only: the database is not what this test is about, and one run is long enough.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.engines.local.packaged import PACKAGED_MODELS, ensure_packaged_models
from tests.engines.local_jobs import local_engine, train_job
from tests.factories import job_method, jsonl, make_file, make_tenant
from tests.fake_engine import fake_engines
from tests.processes import SHARED_DIR

SMOLLM2 = next(m for m in PACKAGED_MODELS if m.name == "smollm2-135m-instruct")
EMAILS = SHARED_DIR / "data" / "emails" / "history.jsonl"

SYSTEM_PROMPTS = {
    "sales": "You write emails for the sales team of Atelier Brisevent, a furniture maker.",
    "marketing": "You write emails for the marketing team of Atelier Brisevent.",
    "support": "You write emails for the customer support team of Atelier Brisevent.",
    "hr": "You write emails for the human resources team of Atelier Brisevent.",
}

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(
        SMOLLM2.part_paths() is None,
        reason=f"the packaged model is not installed: {SMOLLM2.install} (make install does it)",
    ),
    pytest.mark.skipif(not EMAILS.is_file(), reason=f"no email history at {EMAILS}"),
]


def email_examples(n: int) -> list[dict[str, object]]:
    """The first `n` well-rated emails as chat examples: request in, subject and body out."""
    examples = []
    for line in EMAILS.read_text(encoding="utf-8").splitlines():
        email = json.loads(line)
        if email["rating"] < 4:
            continue
        reply = f"Subject: {email['subject']}\n\n{email['body']}"
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPTS[email["department"]]},
                    {"role": "user", "content": email["context"]},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
        if len(examples) == n:
            return examples
    raise AssertionError(f"{EMAILS} holds fewer than {n} emails rated 4 or more")


@pytest.fixture(scope="session")
def packaged_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("packaged")
    assert ensure_packaged_models(models_dir, only=[SMOLLM2.name]) == [SMOLLM2.name]
    return models_dir


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "service.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def local(settings, packaged_models_dir: Path):
    return local_engine(settings, packaged_models_dir)


@pytest.fixture
def engines(local):
    return fake_engines(local)


def test_conversion_is_complete_and_done_once(packaged_models_dir: Path):
    folder = packaged_models_dir / SMOLLM2.name
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not list(packaged_models_dir.glob(".*.partial"))
    written = (folder / "model.safetensors").stat().st_mtime
    assert ensure_packaged_models(packaged_models_dir, only=[SMOLLM2.name]) == [SMOLLM2.name]
    assert (folder / "model.safetensors").stat().st_mtime == written


async def test_fine_tune_smollm2_on_emails_then_chat(client, database, registry, local):
    assert registry.resolve(SMOLLM2.name) is not None
    tenant = await make_tenant(database)
    job = await train_job(
        client,
        tenant,
        local.worker(database),
        model=SMOLLM2.name,
        training_file=await make_file(client, tenant, jsonl(email_examples(10))),
        suffix="emails",
        seed=1,
        method=job_method(n_epochs=1, batch_size=2),
    )
    assert job["fine_tuned_model"].startswith(f"ft:{SMOLLM2.name}:personal:emails:")
    assert job["trained_tokens"] > 0

    response = await client.post(
        "/v1/chat/completions",
        headers=tenant.headers,
        json={
            "model": job["fine_tuned_model"],
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPTS["sales"]},
                {"role": "user", "content": "Thank Mrs. Patel for her order of six oak desks."},
            ],
            "max_tokens": 20,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert 1 <= body["usage"]["completion_tokens"] <= 20
