"""End to end: the real server in a subprocess, driven over HTTP by the official openai SDK.

Models and checkpoints only exist once an engine produced them. No engine runs here, so the test
plays one: it calls the jobs service's engine-side functions on the server's database.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import FileObject

from service.db import Database
from service.jobs import service as jobs
from tests.factories import Tenant, chat_file
from tests.processes import Server, serve, service_env

BASE = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"
SHUTDOWN_DATE = "2027-01-14"
ORGANIZATION = "personal"
WORKER = "e2e-worker"
TRAINED_TOKENS = 1234
HYPERPARAMETERS = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.0}


# ---------------------------------------------------------------- the deployment under test


@dataclass(frozen=True)
class Deployment:
    """The running server, its database and its bootstrap admin key."""

    server: Server
    database_url: str
    admin_key: str

    def client(self, key: str | None = None) -> OpenAI:
        """Return an SDK client for `key` (the admin key by default); close it after use."""
        return OpenAI(
            base_url=self.server.api_url, api_key=key or self.admin_key, max_retries=0
        )

    def create_project(self, name: str) -> Tenant:
        """Create a project and a (non-admin) key for it through the admin API."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        with httpx.Client(base_url=self.server.api_url, headers=headers) as http:
            project = http.post("/organization/projects", json={"name": name})
            assert project.status_code == 200, project.text
            project_id = project.json()["id"]
            key = http.post(f"/organization/projects/{project_id}/api_keys", json={"name": "e2e"})
            assert key.status_code == 200, key.text
        return Tenant(project_id=project_id, key=key.json()["value"])


def _random_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(40))


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    admin_key = _random_key()
    env = service_env(
        data_dir=str(tmp_path / "data"),
        database_url=database_url,
        bootstrap_api_key=admin_key,
        log_level="warning",
    )
    with serve(tmp_path, env) as server:
        yield Deployment(server=server, database_url=database_url, admin_key=admin_key)


@pytest.fixture
def sdk(deployment: Deployment) -> Iterator[OpenAI]:
    """A client with the bootstrap admin key of project `default`."""
    with deployment.client() as client:
        yield client


# ---------------------------------------------------------------- helpers


def upload_training_file(client: OpenAI, content: bytes | None = None) -> FileObject:
    """Upload a valid supervised training file."""
    data = content if content is not None else chat_file()
    return client.files.create(file=("train.jsonl", data, "application/jsonl"), purpose="fine-tune")


def model_ids(client: OpenAI) -> list[str]:
    return [m.id for m in client.models.list()]


def step_metrics(step: int, total: int) -> dict[str, Any]:
    return {
        "step": step,
        "train_loss": round(1.0 / step, 4),
        "train_mean_token_accuracy": round(0.5 + step / (2 * total), 4),
    }


async def play_engine(database_url: str, job_id: str, *, steps: int, checkpoints: set[int]) -> None:
    """Train `job_id` like the upstream engine would: claim, start, report steps, succeed."""
    database = Database(database_url)
    try:
        async with database.session() as session:
            claimed = await jobs.claim_next_job(
                session=session, engine="upstream", worker_id=WORKER, lease_seconds=300
            )
        assert claimed is not None and claimed.id == job_id
        async with database.session() as session:
            await jobs.start_job(
                session=session, job_id=job_id, worker_id=WORKER, hyperparameters=HYPERPARAMETERS
            )
        for step in range(1, steps + 1):
            metrics = step_metrics(step, steps)
            async with database.session() as session:
                await jobs.append_metrics(
                    session=session,
                    job_id=job_id,
                    worker_id=WORKER,
                    metrics={**metrics, "total_steps": steps},
                )
            if step in checkpoints:
                async with database.session() as session:
                    await jobs.add_checkpoint(
                        session=session,
                        job_id=job_id,
                        worker_id=WORKER,
                        organization=ORGANIZATION,
                        step_number=step,
                        metrics=metrics,
                    )
        async with database.session() as session:
            await jobs.succeed_job(
                session=session,
                job_id=job_id,
                worker_id=WORKER,
                organization=ORGANIZATION,
                trained_tokens=TRAINED_TOKENS,
                result_files=[],
            )
    finally:
        await database.dispose()


# ---------------------------------------------------------------- files


def test_files_round_trip(sdk: OpenAI) -> None:
    content = chat_file()
    training = upload_training_file(sdk, content)
    assert training.id.startswith("file-")
    assert training.object == "file"
    assert training.bytes == len(content)
    assert training.filename == "train.jsonl"
    assert training.purpose == "fine-tune"
    assert training.status == "processed"
    assert training._request_id is not None and training._request_id.startswith("req_")

    notes = sdk.files.create(file=("notes.txt", b"private notes", "text/plain"), purpose="user_data")

    assert [f.id for f in sdk.files.list()] == [notes.id, training.id]
    assert [f.id for f in sdk.files.list(purpose="fine-tune")] == [training.id]
    first_page = sdk.files.list(limit=1, order="asc")
    assert [f.id for f in first_page.data] == [training.id]
    assert first_page.has_more is True
    assert [f.id for f in first_page] == [training.id, notes.id]  # auto-paging

    retrieved = sdk.files.retrieve(training.id)
    assert retrieved.model_dump() == training.model_dump()
    assert sdk.files.content(training.id).content == content
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.content(notes.id)
    assert refused.value.body == {
        "message": "Not allowed to download files of purpose: user_data",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }

    deleted = sdk.files.delete(training.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (training.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(training.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.content(training.id)
    assert [f.id for f in sdk.files.list()] == [notes.id]


# ---------------------------------------------------------------- jobs and their events


def test_job_controls_and_paged_events(sdk: OpenAI) -> None:
    training = upload_training_file(sdk)
    job = sdk.fine_tuning.jobs.create(
        model=BASE,
        training_file=training.id,
        suffix="e2e",
        seed=42,
        metadata={"team": "support"},
    )
    assert job.id.startswith("ftjob-")
    assert job.object == "fine_tuning.job"
    assert job.model == SNAPSHOT
    assert job.status == "queued"
    assert job.training_file == training.id
    assert job.seed == 42
    assert job.metadata == {"team": "support"}
    assert job.fine_tuned_model is None
    assert job.finished_at is None
    assert job.result_files == []
    assert job.hyperparameters.n_epochs == "auto"
    assert job.method is not None and job.method.type == "supervised"
    assert job._request_id is not None and job._request_id.startswith("req_")

    other = sdk.fine_tuning.jobs.create(model=BASE, training_file=training.id)
    assert [j.id for j in sdk.fine_tuning.jobs.list()] == [other.id, job.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(limit=1)] == [other.id, job.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "support"})] == [job.id]
    assert sdk.fine_tuning.jobs.retrieve(job.id).model_dump() == job.model_dump()

    assert sdk.fine_tuning.jobs.pause(job.id).status == "paused"
    assert sdk.fine_tuning.jobs.resume(job.id).status == "queued"
    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # idempotent
    with pytest.raises(openai.BadRequestError) as not_paused:
        sdk.fine_tuning.jobs.resume(job.id)
    assert not_paused.value.code == "job_not_paused"

    first_page = sdk.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(first_page.data) == 2
    assert first_page.has_more is True
    events = list(first_page)  # the SDK follows `after=<last id>` over three pages
    assert [e.message for e in events] == [
        "Fine-tuning job cancelled",
        "Fine-tuning job resumed",
        "Fine-tuning job paused",
        "Files validated, moving job to queued state",
        f"Validating training file: {training.id}",
        f"Created fine-tuning job: {job.id}",
    ]
    assert [e.id for e in events] == [
        e.id for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
    ]
    assert len({e.id for e in events}) == len(events)
    for event in events:
        assert event.id.startswith("ftevent-")
        assert event.object == "fine_tuning.job.event"
        assert (event.level, event.type) == ("info", "message")


# ---------------------------------------------------------------- trained models and sharing


def test_trained_model_checkpoints_sharing_and_models(
    deployment: Deployment, sdk: OpenAI
) -> None:
    training = upload_training_file(sdk)
    job = sdk.fine_tuning.jobs.create(model=BASE, training_file=training.id, suffix="support")
    asyncio.run(play_engine(deployment.database_url, job.id, steps=12, checkpoints={3, 6, 9, 12}))

    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded"
    assert done.trained_tokens == TRAINED_TOKENS
    assert done.finished_at is not None
    assert (
        done.hyperparameters.n_epochs,
        done.hyperparameters.batch_size,
        done.hyperparameters.learning_rate_multiplier,
    ) == (3, 1, 1.0)
    model = done.fine_tuned_model
    assert model is not None
    assert re.fullmatch(rf"ft:{SNAPSHOT}:{ORGANIZATION}:support:[0-9A-Za-z]{{8}}", model)

    # Only the last three checkpoints are kept, newest first; each name has its own id segment.
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [12, 9, 6]
    for checkpoint in checkpoints.data:
        assert checkpoint.id.startswith("ftckpt_")
        assert checkpoint.object == "fine_tuning.job.checkpoint"
        assert checkpoint.fine_tuning_job_id == job.id
        assert re.fullmatch(
            rf"ft:{SNAPSHOT}:{ORGANIZATION}:support:[0-9A-Za-z]{{8}}:ckpt-step-"
            rf"{checkpoint.step_number}",
            checkpoint.fine_tuned_model_checkpoint,
        )
        assert checkpoint.metrics.step == checkpoint.step_number
        assert checkpoint.metrics.train_loss == step_metrics(checkpoint.step_number, 12)[
            "train_loss"
        ]
    paged = sdk.fine_tuning.jobs.checkpoints.list(job.id, limit=2)
    assert paged.has_more is True
    assert [c.id for c in paged] == [c.id for c in checkpoints.data]
    shared_name = checkpoints.data[0].fine_tuned_model_checkpoint

    events = sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].message == "The job has successfully completed"
    assert f"New fine-tuned model created: {model}" in [e.message for e in events]
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 12
    assert metrics[0].message == "Step 12/12: training loss=0.08"
    assert metrics[0].data is not None and metrics[0].data["step"] == 12

    # The owner sees its fine-tuned model next to the base models.
    assert {SNAPSHOT, model} <= set(model_ids(sdk))
    retrieved = sdk.models.retrieve(model)
    assert (retrieved.id, retrieved.object, retrieved.owned_by) == (
        model, "model", done.organization_id
    )
    assert retrieved.shutdown_date == SHUTDOWN_DATE
    assert sdk.models.retrieve(shared_name).id == shared_name

    partner = deployment.create_project("partner")
    with deployment.client(partner.key) as partner_sdk:
        assert shared_name not in model_ids(partner_sdk)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.models.retrieve(shared_name)

        permissions = sdk.fine_tuning.checkpoints.permissions
        granted = permissions.create(shared_name, project_ids=[partner.project_id])
        assert len(granted.data) == 1
        grant = granted.data[0]
        assert grant.id.startswith("cp_")
        assert (grant.object, grant.project_id) == ("checkpoint.permission", partner.project_id)
        with pytest.warns(DeprecationWarning):
            listed = permissions.retrieve(shared_name)
        assert [p.id for p in listed.data] == [grant.id]
        assert [p.id for p in permissions.list(shared_name)] == [grant.id]

        # The partner now sees and may use the checkpoint, but not the owner's final model.
        partner_models = model_ids(partner_sdk)
        assert shared_name in partner_models
        assert model not in partner_models
        seen = partner_sdk.models.retrieve(shared_name)
        assert (seen.id, seen.owned_by, seen.shutdown_date) == (
            shared_name, done.organization_id, SHUTDOWN_DATE
        )
        with pytest.raises(openai.NotFoundError):
            partner_sdk.models.retrieve(model)
        continued = partner_sdk.fine_tuning.jobs.create(
            model=shared_name, training_file=upload_training_file(partner_sdk).id
        )
        assert continued.model == shared_name

        # Sharing needs an admin key.
        with pytest.raises(openai.PermissionDeniedError) as not_admin:
            partner_sdk.fine_tuning.checkpoints.permissions.create(
                shared_name, project_ids=[partner.project_id]
            )
        assert not_admin.value.code == "admin_key_required"

        revoked = permissions.delete(grant.id, fine_tuned_model_checkpoint=shared_name)
        assert (revoked.id, revoked.object, revoked.deleted) == (
            grant.id, "checkpoint.permission", True
        )
        assert permissions.list(shared_name).data == []
        assert shared_name not in model_ids(partner_sdk)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.models.retrieve(shared_name)

    deleted = sdk.models.delete(model)
    assert (deleted.id, deleted.deleted) == (model, True)
    assert model not in model_ids(sdk)
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.models.retrieve(model)
    assert (gone.value.code, gone.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.PermissionDeniedError) as base_model:
        sdk.models.delete(SNAPSHOT)
    assert base_model.value.code == "model_not_deletable"


# ---------------------------------------------------------------- errors


def test_errors_map_to_sdk_exceptions(deployment: Deployment, sdk: OpenAI) -> None:
    with deployment.client("sk-ft-" + _random_key()) as stranger:
        with pytest.raises(openai.AuthenticationError) as unknown_key:
            stranger.models.list()
    assert unknown_key.value.status_code == 401
    assert unknown_key.value.code == "invalid_api_key"
    assert unknown_key.value.type == "authentication_error"
    assert unknown_key.value.request_id is not None
    assert unknown_key.value.request_id.startswith("req_")

    training = upload_training_file(sdk)
    with pytest.raises(openai.BadRequestError) as unknown_model:
        sdk.fine_tuning.jobs.create(model="no-such-model", training_file=training.id)
    assert unknown_model.value.param == "model"
    assert unknown_model.value.code == "model_not_available"
    assert unknown_model.value.type == "invalid_request_error"

    job = sdk.fine_tuning.jobs.create(model=BASE, training_file=training.id)
    partner = deployment.create_project("partner")
    with deployment.client(partner.key) as partner_sdk:
        # Another project's objects look absent, whatever the route.
        with pytest.raises(openai.NotFoundError) as foreign_job:
            partner_sdk.fine_tuning.jobs.retrieve(job.id)
        assert foreign_job.value.param == "fine_tuning_job_id"
        with pytest.raises(openai.NotFoundError):
            partner_sdk.fine_tuning.jobs.cancel(job.id)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.fine_tuning.jobs.list_events(job.id)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.fine_tuning.jobs.checkpoints.list(job.id)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.files.retrieve(training.id)
        with pytest.raises(openai.BadRequestError) as foreign_file:
            partner_sdk.fine_tuning.jobs.create(model=BASE, training_file=training.id)
        assert (foreign_file.value.param, foreign_file.value.code) == (
            "training_file", "file_not_found"
        )
        assert partner_sdk.fine_tuning.jobs.list().data == []

        # The admin API refuses project keys.
        with pytest.raises(openai.PermissionDeniedError) as not_admin:
            partner_sdk.post(
                "/organization/projects", body={"name": "intruder"}, cast_to=object
            )
        assert not_admin.value.code == "admin_key_required"

    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "queued"
