"""Isolation between projects: another project's ids look absent (404) on every route, and
nothing changes; plus authentication (401) and admin-only routes (403)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.db import Database
from tests.factories import Tenant, assert_envelope, chat_file, make_file, make_job, make_tenant
from tests.fake_engine import FakeRun

MISSING = {
    "file": "file-" + "0" * 24,
    "job": "ftjob-" + "0" * 24,
    "model": "ft:gpt-4o-mini-2024-07-18:personal::00000000",
    "checkpoint": "ft:gpt-4o-mini-2024-07-18:personal::00000000:ckpt-step-10",
    "permission": "cp_" + "0" * 24,
}


# ---------------------------------------------------------------- helpers


async def finish_job(database: Database, job_id: str) -> tuple[str, str]:
    """Run a queued job to success through the test engine; return (model, checkpoint)."""
    run = FakeRun(database, job_id)
    await run.start({"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.0})
    run.step = 10
    checkpoint = await run.checkpoint({"train_loss": 0.5})
    return await run.succeed(), checkpoint


@dataclass(frozen=True)
class World:
    """Project A owns everything; B and C are other projects."""

    a: Tenant
    a_admin: Tenant
    b: Tenant
    b_admin: Tenant
    c_admin: Tenant
    file: str
    job: str  # paused, so that cancel and resume would both change it
    finished_job: str
    model: str
    checkpoint: str
    permission: str  # A's checkpoint shared with project C

    @property
    def ids(self) -> dict[str, str]:
        return {
            "file": self.file,
            "job": self.job,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "permission": self.permission,
        }


@pytest.fixture
async def world(client: httpx.AsyncClient, database: Database) -> World:
    a = await make_tenant(database, "acme")
    a_admin = await make_tenant(database, "acme", admin=True)
    b = await make_tenant(database, "globex")
    b_admin = await make_tenant(database, "globex", admin=True)
    c_admin = await make_tenant(database, "initech", admin=True)

    finished = await make_job(client, a)
    model, checkpoint = await finish_job(database, finished["id"])

    file_id = await make_file(client, a)
    job = await make_job(client, a, training_file=file_id)
    paused = await client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause", headers=a.headers)
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text

    shared = await client.post(
        f"/v1/fine_tuning/checkpoints/{checkpoint}/permissions",
        headers=a_admin.headers,
        json={"project_ids": [c_admin.project_id]},
    )
    assert shared.status_code == 200, shared.text
    return World(
        a=a,
        a_admin=a_admin,
        b=b,
        b_admin=b_admin,
        c_admin=c_admin,
        file=file_id,
        job=job["id"],
        finished_job=finished["id"],
        model=model,
        checkpoint=checkpoint,
        permission=shared.json()["data"][0]["id"],
    )


async def owner_view(client: httpx.AsyncClient, w: World) -> dict[str, Any]:
    """Everything project A can see about its objects, to compare before and after."""
    view: dict[str, Any] = {}
    for path in (
        f"/v1/files/{w.file}",
        f"/v1/files/{w.file}/content",
        "/v1/files",
        f"/v1/fine_tuning/jobs/{w.job}",
        f"/v1/fine_tuning/jobs/{w.job}/events",
        f"/v1/fine_tuning/jobs/{w.finished_job}",
        f"/v1/fine_tuning/jobs/{w.finished_job}/events",
        f"/v1/fine_tuning/jobs/{w.finished_job}/checkpoints",
        f"/v1/fine_tuning/jobs/{w.finished_job}/metrics",
        "/v1/fine_tuning/jobs",
        f"/v1/models/{w.model}",
        f"/v1/models/{w.checkpoint}",
        "/v1/models",
    ):
        response = await client.get(path, headers=w.a.headers)
        assert response.status_code == 200, (path, response.text)
        view[path] = response.content
    for name in (w.model, w.checkpoint):
        path = f"/v1/fine_tuning/checkpoints/{name}/permissions"
        response = await client.get(path, headers=w.a_admin.headers)
        assert response.status_code == 200, (path, response.text)
        view[path] = response.content
    return view


# (method, path template, JSON body); the template's fields are World.ids keys.
KEY_ROUTES = [
    ("GET", "/v1/files/{file}", None),
    ("DELETE", "/v1/files/{file}", None),
    ("GET", "/v1/files/{file}/content", None),
    ("POST", "/v1/files/{file}/check", {"method": "supervised", "model": "gpt-4o-mini"}),
    ("GET", "/v1/fine_tuning/jobs/{job}", None),
    ("POST", "/v1/fine_tuning/jobs/{job}/cancel", None),
    ("POST", "/v1/fine_tuning/jobs/{job}/pause", None),
    ("POST", "/v1/fine_tuning/jobs/{job}/resume", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/events", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/checkpoints", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/metrics", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/events?stream=true", None),
    ("GET", "/v1/models/{model}", None),
    ("DELETE", "/v1/models/{model}", None),
    ("GET", "/v1/models/{checkpoint}", None),
    ("DELETE", "/v1/models/{checkpoint}", None),
]
ADMIN_ROUTES = [
    ("POST", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions", "grant-b"),
    ("GET", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions", None),
    ("DELETE", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions/{permission}", None),
    ("POST", "/v1/fine_tuning/checkpoints/{model}/permissions", "grant-b"),
    ("GET", "/v1/fine_tuning/checkpoints/{model}/permissions", None),
]


def _route_id(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


async def send(
    client: httpx.AsyncClient,
    tenant: Tenant,
    method: str,
    template: str,
    body: Any,
    ids: dict[str, str],
) -> httpx.Response:
    if body == "grant-b":
        body = {"project_ids": [tenant.project_id]}
    return await client.request(method, template.format(**ids), headers=tenant.headers, json=body)


async def assert_looks_absent(
    client: httpx.AsyncClient, w: World, tenant: Tenant, method: str, template: str, body: Any
) -> None:
    """The other project's id gets the same 404 as an id that exists nowhere."""
    foreign = await send(client, tenant, method, template, body, w.ids)
    missing = await send(client, tenant, method, template, body, MISSING)
    foreign_error = assert_envelope(foreign, 404)
    missing_error = assert_envelope(missing, 404)
    assert foreign_error["type"] == "invalid_request_error"

    def neutral(error: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
        message = error["message"]
        # Longest first: a checkpoint name starts with its model's name.
        for name, value in sorted(ids.items(), key=lambda item: -len(item[1])):
            message = message.replace(value, f"<{name}>")
        return {**error, "message": message}

    assert neutral(foreign_error, w.ids) == neutral(missing_error, MISSING)


# ---------------------------------------------------------------- routes that take an id


@pytest.mark.parametrize(("method", "template", "body"), KEY_ROUTES, ids=map(_route_id, KEY_ROUTES))
async def test_other_project_gets_404_and_nothing_changes(client, world, method, template, body):
    before = await owner_view(client, world)
    await assert_looks_absent(client, world, world.b, method, template, body)
    assert await owner_view(client, world) == before


@pytest.mark.parametrize(
    ("method", "template", "body"), ADMIN_ROUTES, ids=map(_route_id, ADMIN_ROUTES)
)
async def test_other_projects_admin_gets_404_on_permissions(client, world, method, template, body):
    before = await owner_view(client, world)
    await assert_looks_absent(client, world, world.b_admin, method, template, body)
    assert await owner_view(client, world) == before


async def test_shared_checkpoint_is_usable_but_not_manageable(client, world):
    """C may use A's checkpoint, which was shared with it, but not delete or re-share it."""
    before = await owner_view(client, world)
    c = world.c_admin
    used = await client.get(f"/v1/models/{world.checkpoint}", headers=c.headers)
    assert used.status_code == 200, used.text
    listed = await client.get("/v1/models", headers=c.headers)
    assert world.checkpoint in [m["id"] for m in listed.json()["data"]]

    deleted = await client.delete(f"/v1/models/{world.checkpoint}", headers=c.headers)
    assert assert_envelope(deleted, 403)["type"] == "permission_error"
    for method, template, body in ADMIN_ROUTES:
        if "{checkpoint}" in template:
            response = await send(client, c, method, template, body, world.ids)
            assert_envelope(response, 404)
    assert await owner_view(client, world) == before


async def test_permission_ids_are_scoped_to_the_owners_model(client, database, world):
    """B cannot reach A's grant through a model of its own either."""
    b_job = await make_job(client, world.b)
    b_model, _ = await finish_job(database, b_job["id"])
    before = await owner_view(client, world)
    base = f"/v1/fine_tuning/checkpoints/{b_model}/permissions"

    deleted = await client.delete(f"{base}/{world.permission}", headers=world.b_admin.headers)
    assert assert_envelope(deleted, 404)["param"] == "permission_id"
    listed = await client.get(
        base, headers=world.b_admin.headers, params={"after": world.permission}
    )
    assert assert_envelope(listed, 400)["param"] == "after"
    assert await owner_view(client, world) == before


# ---------------------------------------------------------------- lists and references


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/v1/files", "file"),
        ("/v1/fine_tuning/jobs", "job"),
    ],
)
async def test_other_projects_ids_are_unknown_cursors(client, world, path, cursor):
    own = await client.get(path, headers=world.b.headers)
    assert own.status_code == 200
    assert own.json()["data"] == []
    response = await client.get(path, headers=world.b.headers, params={"after": world.ids[cursor]})
    assert assert_envelope(response, 400)["param"] == "after"


async def test_other_projects_event_and_checkpoint_ids_are_unknown_cursors(client, world):
    b_job = await make_job(client, world.b)
    a_events = await client.get(
        f"/v1/fine_tuning/jobs/{world.finished_job}/events", headers=world.a.headers
    )
    a_checkpoints = await client.get(
        f"/v1/fine_tuning/jobs/{world.finished_job}/checkpoints", headers=world.a.headers
    )
    for path, foreign in (
        ("events", a_events.json()["data"][0]["id"]),
        ("checkpoints", a_checkpoints.json()["data"][0]["id"]),
    ):
        response = await client.get(
            f"/v1/fine_tuning/jobs/{b_job['id']}/{path}",
            headers=world.b.headers,
            params={"after": foreign},
        )
        assert assert_envelope(response, 400)["param"] == "after"


async def test_other_projects_models_are_not_listed(client, world):
    listed = await client.get("/v1/models", headers=world.b.headers)
    assert listed.status_code == 200
    names = [m["id"] for m in listed.json()["data"]]
    assert world.model not in names
    assert world.checkpoint not in names
    assert not any(name.startswith("ft:") for name in names)


async def test_job_in_b_with_a_training_file_is_refused(client, world):
    response = await client.post(
        "/v1/fine_tuning/jobs",
        headers=world.b.headers,
        json={"model": "gpt-4o-mini", "training_file": world.file},
    )
    error = assert_envelope(response, 400)
    assert error["param"] == "training_file"
    assert error["type"] == "invalid_request_error"
    assert (await client.get("/v1/fine_tuning/jobs", headers=world.b.headers)).json()["data"] == []


async def test_job_in_b_with_a_validation_file_is_refused(client, world):
    own = await make_file(client, world.b, chat_file())
    response = await client.post(
        "/v1/fine_tuning/jobs",
        headers=world.b.headers,
        json={"model": "gpt-4o-mini", "training_file": own, "validation_file": world.file},
    )
    assert assert_envelope(response, 400)["param"] == "validation_file"


@pytest.mark.parametrize("name", ["model", "checkpoint"])
async def test_job_in_b_from_a_fine_tuned_model_is_refused(client, world, name):
    own = await make_file(client, world.b, chat_file())
    response = await client.post(
        "/v1/fine_tuning/jobs",
        headers=world.b.headers,
        json={"model": world.ids[name], "training_file": own},
    )
    assert assert_envelope(response, 400)["param"] == "model"


async def test_check_in_b_against_a_fine_tuned_model_is_refused(client, world):
    own = await make_file(client, world.b, chat_file())
    response = await client.post(
        f"/v1/files/{own}/check",
        headers=world.b.headers,
        json={"method": "supervised", "model": world.model},
    )
    assert assert_envelope(response, 400)["param"] == "model"


async def test_a_can_still_use_everything(client, world):
    """The owner's own requests succeed (the 404s above are about the caller, not the ids)."""
    job = await client.post(
        "/v1/fine_tuning/jobs",
        headers=world.a.headers,
        json={"model": world.model, "training_file": world.file},
    )
    assert job.status_code == 200, job.text
    assert job.json()["model"] == world.model
    deleted = await client.delete(f"/v1/models/{world.model}", headers=world.a.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": world.model, "object": "model", "deleted": True}


# ---------------------------------------------------------------- authentication


UNAUTHENTICATED_ROUTES = [
    ("GET", "/v1/files", None),
    ("GET", "/v1/files/{file}", None),
    ("GET", "/v1/files/{file}/content", None),
    ("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": "{file}"}),
    ("POST", "/v1/fine_tuning/jobs/{job}/cancel", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/metrics", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/events?stream=true", None),
    ("GET", "/v1/fine_tuning/events?stream=true", None),
    ("POST", "/v1/fine_tuning/stream_tickets", None),
    ("GET", "/v1/models", None),
    ("DELETE", "/v1/models/{model}", None),
    ("GET", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions", None),
    ("GET", "/v1/organization/projects", None),
]


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Bearer ", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "missing_api_key"),
        ("Bearer sk-ft-not-a-real-key-000000000000000000000", "invalid_api_key"),
    ],
    ids=["no-header", "empty", "empty-bearer", "basic-scheme", "unknown-key"],
)
async def test_missing_or_wrong_key_is_401(client, world, authorization, code):
    before = await owner_view(client, world)
    headers = {} if authorization is None else {"Authorization": authorization}
    presented = (authorization or "").partition(" ")[2].strip()
    for method, template, body in UNAUTHENTICATED_ROUTES:
        if isinstance(body, dict):
            body = {k: v.format(**world.ids) for k, v in body.items()}
        response = await client.request(
            method, template.format(**world.ids), headers=headers, json=body
        )
        error = assert_envelope(response, 401)
        assert (error["type"], error["code"]) == ("authentication_error", code), (method, template)
        if presented:
            assert presented not in error["message"]  # never echo the key
    assert await owner_view(client, world) == before


# Admin-only requests on project A's own objects; `{project}` is A's id, `{b}` is B's.
ADMIN_ONLY = [
    ("POST", "/v1/organization/projects", {"name": "hooli"}),
    ("GET", "/v1/organization/projects", None),
    ("POST", "/v1/organization/projects/{project}/api_keys", {"name": "k"}),
    ("POST", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions", {"project_ids": ["{b}"]}),
    ("GET", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions", None),
    ("DELETE", "/v1/fine_tuning/checkpoints/{checkpoint}/permissions/{permission}", None),
]


async def send_admin_only(
    client: httpx.AsyncClient, w: World, tenant: Tenant, method: str, template: str, body: Any
) -> httpx.Response:
    names = {**w.ids, "project": w.a.project_id, "b": w.b.project_id}
    if body is not None and "project_ids" in body:
        body = {"project_ids": [p.format(**names) for p in body["project_ids"]]}
    return await client.request(method, template.format(**names), headers=tenant.headers, json=body)


@pytest.mark.parametrize(("method", "template", "body"), ADMIN_ONLY, ids=map(_route_id, ADMIN_ONLY))
async def test_non_admin_key_is_403_on_admin_routes(client, world, method, template, body):
    before = await owner_view(client, world)
    response = await send_admin_only(client, world, world.a, method, template, body)
    error = assert_envelope(response, 403)
    assert error["type"] == "permission_error"
    assert error["code"] == "admin_key_required"
    assert await owner_view(client, world) == before
    projects = await client.get("/v1/organization/projects", headers=world.a_admin.headers)
    assert "hooli" not in [p["name"] for p in projects.json()["data"]]


async def test_admin_key_may_use_admin_routes(client, world):
    """The counterpart of the 403s: the same requests succeed with the owner's admin key."""
    for method, template, body in ADMIN_ONLY:
        response = await send_admin_only(client, world, world.a_admin, method, template, body)
        assert response.status_code == 200, (method, template, response.text)
