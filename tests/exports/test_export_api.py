"""`GET /v1/models/{model}/export` on a model trained here: 202 while it builds (progress in
job-like events), then the archive with Range and ETag; a build cut short is rebuilt, never
served; other projects' models are 404; base and provider models are refused."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time

import pytest
from sqlalchemy import update
from sqlmodel import col

from service.exports.models import ModelExport
from tests.engines.local_jobs import local_engine, train_job
from tests.factories import (
    assert_envelope,
    chat_file,
    job_method,
    make_file,
    make_job,
    make_tenant,
)
from tests.fake_engine import claim_next, fake_engines

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


@pytest.fixture
def local(settings, tiny_model_dir):
    return local_engine(settings, tiny_model_dir.parent)


@pytest.fixture
def engines(local):
    return fake_engines(local)


@pytest.fixture
async def trained(client, database, local):
    """A tenant and a tiny-chat model fine-tuned for one epoch by a real worker."""
    tenant = await make_tenant(database)
    training = await make_file(client, tenant, chat_file(12))
    method = job_method(n_epochs=1, batch_size=4, learning_rate_multiplier=50)
    job = await train_job(
        client,
        tenant,
        local.worker(database),
        model="tiny-chat",
        training_file=training,
        method=method,
    )
    return tenant, job["fine_tuned_model"]


def url(model: str, fmt: str) -> str:
    return f"/v1/models/{model}/export?format={fmt}"


async def test_an_export_builds_then_downloads_whole_or_in_ranges(app, client, trained):
    tenant, model = trained
    first = await client.get(url(model, "adapter"), headers=tenant.headers)
    assert first.status_code == 202, first.text
    assert first.headers["retry-after"] == "2"
    pending = first.json()
    assert (pending["object"], pending["status"], pending["format"]) == (
        "model.export",
        "queued",
        "adapter",
    )
    assert await app.state.exports.build_next() is True  # the builder's step

    done = await client.get(url(model, "adapter"), headers=tenant.headers)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"] == "application/octet-stream"
    assert done.headers["content-disposition"].endswith('-adapter.tar"')
    archive = done.content
    digest = hashlib.sha256(archive).hexdigest()
    assert done.headers["etag"] == f'"{digest}"'
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        config = json.load(tar.extractfile(f"{top}/adapter_config.json"))
    assert f"{top}/adapter_model.safetensors" in names
    assert config["base_model_name_or_path"] == "tiny-chat"

    # A download cut short resumes where it stopped.
    head = await client.get(
        url(model, "adapter"), headers={**tenant.headers, "Range": "bytes=0-999"}
    )
    rest = await client.get(
        url(model, "adapter"), headers={**tenant.headers, "Range": "bytes=1000-"}
    )
    assert (head.status_code, rest.status_code) == (206, 206)
    assert head.content + rest.content == archive

    listed = await client.get(f"/v1/models/{model}/exports", headers=tenant.headers)
    [export] = listed.json()["data"]
    assert (export["status"], export["progress"], export["sha256"]) == ("ready", 1.0, digest)
    events = await client.get(
        f"/v1/models/{model}/exports/adapter/events?limit=100", headers=tenant.headers
    )
    log = events.json()["data"]
    assert log[0]["message"].startswith("Export ready") and log[-1]["message"].startswith(
        "Export of"
    )
    progress = [e["data"]["progress"] for e in reversed(log) if e["type"] == "metrics"]
    assert progress == sorted(progress) and progress[-1] == 0.9
    assert all(e["object"] == "model.export.event" for e in log)


async def test_a_build_cut_short_is_rebuilt_and_never_served_half(app, client, database, trained):
    tenant, model = trained
    await client.get(url(model, "merged"), headers=tenant.headers)
    builder = app.state.exports
    row = await builder._claim()  # a builder took it, then died: its lease runs out
    async with database.session() as session:
        await session.exec(
            update(ModelExport)
            .where(col(ModelExport.id) == row.id)
            .values(lease_expires_at=time.time() - 1, progress=0.4)
        )
        await session.commit()
    leftover = builder.files_dir / "exports" / f"{row.id}.builder-dead.tmp"
    leftover.mkdir(parents=True)
    (leftover / "half.safetensors").write_bytes(b"\0" * 100)

    waiting = await client.get(url(model, "merged"), headers=tenant.headers)
    assert waiting.status_code == 202 and waiting.json()["status"] == "building"
    assert await builder.build_next() is True  # taken over and built from the start
    assert not leftover.exists()
    done = await client.get(url(model, "merged"), headers=tenant.headers)
    assert done.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(done.content)) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    events = await client.get(
        f"/v1/models/{model}/exports/merged/events?limit=100", headers=tenant.headers
    )
    assert any("restarted" in e["message"] for e in events.json()["data"])


async def test_other_projects_and_unexportable_models_are_refused(client, database, trained):
    tenant, model = trained
    other = await make_tenant(database, "other")
    refused = await client.get(url(model, "gguf"), headers=other.headers)
    assert assert_envelope(refused, 404)["code"] == "model_not_found"
    listed = await client.get(f"/v1/models/{model}/exports", headers=other.headers)
    assert listed.json()["data"] == []
    base = await client.get(url("tiny-chat", "merged"), headers=tenant.headers)
    assert assert_envelope(base, 400)["code"] == "model_not_exportable"
    bad = await client.get(url(model, "onnx"), headers=tenant.headers)
    assert assert_envelope(bad, 400)["param"] == "format"
    unknown = await client.get(url("ft:nothing:here", "adapter"), headers=tenant.headers)
    assert assert_envelope(unknown, 404)["code"] == "model_not_found"


async def test_a_providers_model_cannot_leave_it(client, database):
    tenant = await make_tenant(database)
    await make_job(client, tenant)  # on gpt-4o-mini, an engine that keeps its weights
    run = await claim_next(database)
    await run.start()
    await run.succeed()
    [model] = [
        m["id"]
        for m in (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
        if m["id"].startswith("ft:")
    ]
    refused = await client.get(url(model, "adapter"), headers=tenant.headers)
    error = assert_envelope(refused, 400)
    assert (error["code"], error["param"]) == ("model_not_exportable", "format")
