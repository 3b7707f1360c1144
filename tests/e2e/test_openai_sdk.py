"""End to end: the real server in a subprocess, driven over HTTP by the official openai SDK.

Its jobs on gpt-4o-mini run on a provider of `FT_PROVIDERS`: the OpenAI-wire double of
tests/upstream, served from a thread of this process, which the test moves step by step.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob

from tests.factories import Tenant, chat_file
from tests.processes import Server, serve, service_env
from tests.upstream.openai_double import ThreadedDouble, step_metrics

BASE = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"
# Far-away dates: OpenAI's real ones would change what the suite does the day they pass.
SHUTDOWN_DATE = "2099-12-31"
ORGANIZATION = "personal"
STEPS = 12
TRAINED_TOKENS = 1000 * STEPS


# ---------------------------------------------------------------- the deployment under test


@dataclass(frozen=True)
class Deployment:
    """The running server, its database and its bootstrap admin key."""

    server: Server
    database_url: str
    admin_key: str
    double: ThreadedDouble

    def client(self, key: str | None = None) -> OpenAI:
        """Return an SDK client for `key` (the admin key by default); close it after use."""
        return OpenAI(base_url=self.server.api_url, api_key=key or self.admin_key, max_retries=0)

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
    with ThreadedDouble(steps=STEPS, checkpoint_every=3, organization=ORGANIZATION) as double:
        provider = {
            "name": "openai",
            "base_url": double.url,
            "api_key": double.double.api_key,
            "models": [{"id": BASE, "shutdown_date": SHUTDOWN_DATE}],
        }
        env = service_env(
            data_dir=str(tmp_path / "data"),
            database_url=database_url,
            bootstrap_api_key=admin_key,
            log_level="warning",
            providers=json.dumps([provider]),
            upstream_sync_running_seconds="0.1",
            upstream_sync_queued_seconds="0.1",
            upstream_sync_paused_seconds="0.1",
        )
        with serve(tmp_path, env) as server:
            yield Deployment(
                server=server, database_url=database_url, admin_key=admin_key, double=double
            )
        # Shown by pytest when the test failed: the server's warnings and tracebacks.
        sys.stderr.write(server.stderr())


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


def wait_for(check: Any, what: str, timeout: float = 30) -> Any:
    """Poll `check()` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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

    notes = sdk.files.create(
        file=("notes.txt", b"private notes", "text/plain"), purpose="user_data"
    )

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


def test_file_expiry(sdk: OpenAI) -> None:
    batch_input = b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}\n'
    hour = sdk.files.create(
        file=("hour.jsonl", batch_input, "application/jsonl"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert hour.expires_at == hour.created_at + 3600
    # Batch files expire after 30 days unless told otherwise; other purposes never do.
    batch = sdk.files.create(
        file=("batch.jsonl", batch_input, "application/jsonl"), purpose="batch"
    )
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600
    assert upload_training_file(sdk).expires_at is None
    with pytest.raises(openai.BadRequestError) as too_short:
        sdk.files.create(
            file=("minute.jsonl", batch_input, "application/jsonl"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert too_short.value.param == "expires_after.seconds"


# ---------------------------------------------------------------- jobs and their events


def test_job_controls_and_paged_events(deployment: Deployment, sdk: OpenAI) -> None:
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

    other = sdk.fine_tuning.jobs.create(
        model=BASE,
        training_file=training.id,
        metadata={"team": "sales", "ticket": ""},
        integrations=[{"type": "wandb", "wandb": {"project": "emails"}}],
    )
    assert other.integrations is not None and other.integrations[0].wandb.project == "emails"
    assert [j.id for j in sdk.fine_tuning.jobs.list()] == [other.id, job.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(limit=1)] == [other.id, job.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "support"})] == [job.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"ticket": ""})] == [other.id]
    assert sdk.fine_tuning.jobs.list(metadata={"team": "nobody"}).data == []
    assert sdk.fine_tuning.jobs.retrieve(job.id).model_dump() == job.model_dump()

    # Once the provider has the job (and has validated its file), controls go there.
    remote = deployment.double.job_for(job.id)
    deployment.double.call(lambda d: d.tick(remote))
    wait_for(
        lambda: f"Created fine-tuning job: {remote}"
        in [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100).data],
        "the provider's events to be mirrored",
    )
    assert sdk.fine_tuning.jobs.pause(job.id).status == "paused"
    assert sdk.fine_tuning.jobs.resume(job.id).status == "queued"
    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # idempotent
    with pytest.raises(openai.BadRequestError) as not_paused:
        sdk.fine_tuning.jobs.resume(job.id)
    assert not_paused.value.code == "job_not_paused"

    wait_for(
        lambda: sdk.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message
        == "Fine-tuning job cancelled",
        "the provider's log of the controls",
    )
    upstream_file = deployment.double.double.jobs[remote].body["training_file"]
    first_page = sdk.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(first_page.data) == 2
    assert first_page.has_more is True
    events = list(first_page)  # the SDK follows `after=<last id>` over three pages
    # Ours until the job left, then the provider's, each once, in its order.
    assert [e.message for e in events] == [
        "Fine-tuning job cancelled",
        "Fine-tuning job resumed",
        "Fine-tuning job paused",
        "Files validated, moving job to queued state",
        f"Validating training file: {upstream_file}",
        f"Created fine-tuning job: {remote}",
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


def train(deployment: Deployment, client: OpenAI, *, suffix: str) -> FineTuningJob:
    """Create a job; the provider trains it (12 steps, a checkpoint every third) to its end."""
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload_training_file(client).id, suffix=suffix
    )
    remote = deployment.double.job_for(job.id)
    deployment.double.call(lambda d: d.run_to_end(remote))
    return wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j,
        "the job to succeed here",
    )


def test_trained_model_and_its_checkpoints(deployment: Deployment, sdk: OpenAI) -> None:
    done = train(deployment, sdk, suffix="support")
    assert done.status == "succeeded"
    with pytest.raises(openai.BadRequestError) as finished:
        sdk.fine_tuning.jobs.cancel(done.id)
    assert finished.value.code == "job_not_cancellable"
    with pytest.raises(openai.BadRequestError) as not_running:
        sdk.fine_tuning.jobs.pause(done.id)
    assert not_running.value.code == "job_not_pausable"
    assert done.trained_tokens == TRAINED_TOKENS
    assert done.finished_at is not None
    assert done.estimated_finish is None
    assert done.error is None
    assert (
        done.hyperparameters.n_epochs,
        done.hyperparameters.batch_size,
        done.hyperparameters.learning_rate_multiplier,
    ) == (3, 1, 1.0)
    model = done.fine_tuned_model
    assert model is not None
    assert re.fullmatch(rf"ft:{SNAPSHOT}:{ORGANIZATION}:support:[0-9A-Za-z]{{8}}", model)

    # Only the last three checkpoints are kept, newest first; each name has its own id segment.
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(done.id)
    assert [c.step_number for c in checkpoints.data] == [12, 9, 6]
    for checkpoint in checkpoints.data:
        assert checkpoint.id.startswith("ftckpt_")
        assert checkpoint.object == "fine_tuning.job.checkpoint"
        assert checkpoint.fine_tuning_job_id == done.id
        assert re.fullmatch(
            rf"ft:{SNAPSHOT}:{ORGANIZATION}:support:[0-9A-Za-z]{{8}}:ckpt-step-"
            rf"{checkpoint.step_number}",
            checkpoint.fine_tuned_model_checkpoint,
        )
        assert not checkpoint.fine_tuned_model_checkpoint.startswith(f"{model}:")
        assert checkpoint.metrics.step == checkpoint.step_number
        expected = step_metrics(checkpoint.step_number, STEPS)
        assert checkpoint.metrics.train_loss == expected["train_loss"]
    paged = sdk.fine_tuning.jobs.checkpoints.list(done.id, limit=2)
    assert paged.has_more is True
    assert [c.id for c in paged] == [c.id for c in checkpoints.data]

    events = sdk.fine_tuning.jobs.list_events(done.id, limit=100).data
    assert events[0].message == "The job has successfully completed"
    assert f"New fine-tuned model created: {model}" in [e.message for e in events]
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 12
    assert metrics[0].message == "Step 12/12: training loss=0.17"
    assert metrics[0].data is not None and metrics[0].data["step"] == 12

    # The owner sees its fine-tuned model next to the base models, and may use its checkpoints.
    assert {SNAPSHOT, model} <= set(model_ids(sdk))
    retrieved = sdk.models.retrieve(model)
    assert retrieved.id == model
    assert retrieved.object == "model"
    assert retrieved.owned_by == done.organization_id
    assert retrieved.shutdown_date == SHUTDOWN_DATE
    newest = checkpoints.data[0].fine_tuned_model_checkpoint
    assert sdk.models.retrieve(newest).id == newest
    continued = sdk.fine_tuning.jobs.create(model=model, training_file=upload_training_file(sdk).id)
    assert continued.model == model

    deleted = sdk.models.delete(model)
    assert (deleted.id, deleted.object, deleted.deleted) == (model, "model", True)
    assert model not in model_ids(sdk)
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.models.retrieve(model)
    assert (gone.value.code, gone.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.PermissionDeniedError) as base_model:
        sdk.models.delete(SNAPSHOT)
    assert base_model.value.code == "model_not_deletable"


def test_sharing_a_checkpoint_and_a_model_with_other_projects(
    deployment: Deployment, sdk: OpenAI
) -> None:
    done = train(deployment, sdk, suffix="shared")
    model = done.fine_tuned_model
    assert model is not None
    checkpoint = sdk.fine_tuning.jobs.checkpoints.list(done.id).data[0].fine_tuned_model_checkpoint
    partner = deployment.create_project("partner")
    auditor = deployment.create_project("auditor")
    permissions = sdk.fine_tuning.checkpoints.permissions

    with deployment.client(partner.key) as partner_sdk:
        assert checkpoint not in model_ids(partner_sdk)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.models.retrieve(checkpoint)

        granted = permissions.create(checkpoint, project_ids=[partner.project_id])
        assert len(granted.data) == 1
        grant = granted.data[0]
        assert grant.id.startswith("cp_")
        assert grant.object == "checkpoint.permission"
        assert grant.project_id == partner.project_id
        (audit_grant,) = permissions.create(checkpoint, project_ids=[auditor.project_id]).data

        # The deprecated retrieve and the paginated list show the same grants, newest first.
        with pytest.warns(DeprecationWarning):
            listed = permissions.retrieve(checkpoint)
        assert [p.id for p in listed.data] == [audit_grant.id, grant.id]
        assert [p.id for p in permissions.list(checkpoint)] == [audit_grant.id, grant.id]
        assert [p.id for p in permissions.list(checkpoint, limit=1)] == [audit_grant.id, grant.id]
        assert [p.id for p in permissions.list(checkpoint, order="ascending")] == [
            grant.id,
            audit_grant.id,
        ]
        only_partner = permissions.list(checkpoint, project_id=partner.project_id)
        assert [p.id for p in only_partner] == [grant.id]

        # The partner now sees and may train from the checkpoint (its name has colons in the
        # path), but not the owner's final model.
        partner_models = model_ids(partner_sdk)
        assert checkpoint in partner_models
        assert model not in partner_models
        seen = partner_sdk.models.retrieve(checkpoint)
        assert seen.id == checkpoint
        assert seen.owned_by == done.organization_id
        assert seen.shutdown_date == SHUTDOWN_DATE
        with pytest.raises(openai.NotFoundError):
            partner_sdk.models.retrieve(model)
        continued = partner_sdk.fine_tuning.jobs.create(
            model=checkpoint, training_file=upload_training_file(partner_sdk).id
        )
        assert continued.model == checkpoint
        with pytest.raises(openai.PermissionDeniedError) as not_owner:
            partner_sdk.models.delete(checkpoint)
        assert not_owner.value.code == "model_not_deletable"

        with pytest.raises(openai.BadRequestError) as unknown_project:
            permissions.create(checkpoint, project_ids=["proj_doesnotexist"])
        assert unknown_project.value.param == "project_ids"
        assert unknown_project.value.code == "project_not_found"
        with pytest.raises(openai.NotFoundError) as unknown_checkpoint:
            permissions.create(f"{checkpoint}0", project_ids=[partner.project_id])
        assert unknown_checkpoint.value.param == "fine_tuned_model_checkpoint"

        # Sharing needs an admin key.
        with pytest.raises(openai.PermissionDeniedError) as not_admin:
            partner_sdk.fine_tuning.checkpoints.permissions.create(
                checkpoint, project_ids=[partner.project_id]
            )
        assert not_admin.value.code == "admin_key_required"

        revoked = permissions.delete(grant.id, fine_tuned_model_checkpoint=checkpoint)
        assert revoked.id == grant.id
        assert revoked.object == "checkpoint.permission"
        assert revoked.deleted is True
        assert [p.id for p in permissions.list(checkpoint)] == [audit_grant.id]
        assert checkpoint not in model_ids(partner_sdk)
        with pytest.raises(openai.NotFoundError):
            partner_sdk.models.retrieve(checkpoint)

    with deployment.client(auditor.key) as auditor_sdk:
        assert checkpoint in model_ids(auditor_sdk)
        # A final model can be shared too; deleting it ends the grant.
        permissions.create(model, project_ids=[auditor.project_id])
        assert auditor_sdk.models.retrieve(model).id == model
        assert sdk.models.delete(model).deleted is True
        assert model not in model_ids(auditor_sdk)
        with pytest.raises(openai.NotFoundError):
            auditor_sdk.models.retrieve(model)


# ---------------------------------------------------------------- errors


def test_errors_map_to_sdk_exceptions(deployment: Deployment, sdk: OpenAI) -> None:
    with (
        deployment.client("sk-ft-" + _random_key()) as stranger,
        pytest.raises(openai.AuthenticationError) as unknown_key,
    ):
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

    with pytest.raises(openai.BadRequestError) as unknown_field:
        sdk.fine_tuning.jobs.create(
            model=BASE, training_file=training.id, extra_body={"learning_rate": 0.1}
        )
    assert unknown_field.value.param == "learning_rate"
    assert unknown_field.value.code == "unknown_parameter"
    with pytest.raises(openai.BadRequestError) as wrong_format:
        sdk.fine_tuning.jobs.create(model=BASE, training_file=training.id, method={"type": "dpo"})
    assert wrong_format.value.param == "training_file"
    assert wrong_format.value.code == "invalid_format_for_method"
    with pytest.raises(openai.BadRequestError) as long_suffix:
        sdk.fine_tuning.jobs.create(model=BASE, training_file=training.id, suffix="s" * 65)
    assert long_suffix.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as bad_data:
        upload_training_file(sdk, b'{"messages": []}\nnot json\n')
    assert bad_data.value.param == "file"
    with pytest.raises(openai.BadRequestError) as bad_cursor:
        sdk.fine_tuning.jobs.list(after="ftjob-doesnotexist")
    assert bad_cursor.value.param == "after"
    with pytest.raises(openai.NotFoundError) as no_route:
        sdk.get("/fine_tuning/nothing-here", cast_to=object)
    assert no_route.value.body == {
        "message": "Invalid URL (GET /v1/fine_tuning/nothing-here)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }

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
        assert foreign_file.value.param == "training_file"
        assert foreign_file.value.code == "file_not_found"
        assert partner_sdk.fine_tuning.jobs.list().data == []

        # The admin API refuses project keys.
        with pytest.raises(openai.PermissionDeniedError) as not_admin:
            partner_sdk.post("/organization/projects", body={"name": "intruder"}, cast_to=object)
        assert not_admin.value.code == "admin_key_required"

    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "queued"


# ---------------------------------------------------------------- alpha graders


def test_graders_validate_and_run_through_the_sdk(sdk: OpenAI) -> None:
    grader: Any = {
        "type": "string_check",
        "name": "exact",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": "eq",
    }
    assert sdk.fine_tuning.alpha.graders.validate(grader=grader).grader is not None
    run = sdk.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="Paris", item={"answer": "Paris"}
    )
    assert run.reward == 1.0 and run.metadata.name == "exact"
    assert run.metadata.errors.formula_parse_error is False
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.alpha.graders.validate(
            grader={"type": "python", "name": "py", "source": "def grade(s, i): return 1"}
        )
    assert refused.value.code == "unsupported_grader"


# ---------------------------------------------------------------- uploads


def test_upload_file_chunked_through_the_sdk(sdk: OpenAI, tmp_path: Any) -> None:
    content = chat_file(60)
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    upload = sdk.uploads.upload_file_chunked(
        file=path,
        mime_type="text/jsonl",
        purpose="fine-tune",
        part_size=len(content) // 3 + 1,  # three parts
        md5=hashlib.md5(content).hexdigest(),
    )
    assert upload.status == "completed" and upload.file is not None
    assert upload.file.bytes == len(content) and upload.file.purpose == "fine-tune"
    assert sdk.files.content(upload.file.id).content == content
    job = sdk.fine_tuning.jobs.create(model=BASE, training_file=upload.file.id)
    assert job.training_file == upload.file.id
