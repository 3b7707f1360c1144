"""OpenAI's error envelope on the framework's own errors, request ids on every answer, the
health check and the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.factories import Tenant, assert_envelope, make_file, make_job, make_tenant

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
async def tenant(database) -> Tenant:
    return await make_tenant(database)


# ---------------------------------------------------------------- routing errors


@pytest.mark.parametrize("authorized", [True, False], ids=["with-key", "without-key"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("POST", "/v1/fine_tuning/nope"),
        ("GET", "/index.html"),  # the dashboard is / and /assets/* only
        ("DELETE", "/v2/files"),
    ],
)
async def test_unknown_route_is_404(client, tenant, authorized, method, path):
    headers = tenant.headers if authorized else {}
    error = assert_envelope(await client.request(method, path, headers=headers), 404)
    assert error["type"] == "invalid_request_error"
    assert error["message"] == f"Invalid URL ({method} {path})"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/files", {"GET", "POST"}),
        ("DELETE", JOBS, {"GET", "POST"}),
        ("GET", f"{JOBS}/ftjob-abc/cancel", {"POST"}),
        ("PATCH", "/v1/models/gpt-4o-mini", {"GET", "DELETE"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_wrong_method_is_405(client, tenant, method, path, allowed):
    response = await client.request(method, path, headers=tenant.headers)
    error = assert_envelope(response, 405)
    assert error["type"] == "invalid_request_error"
    assert method in error["message"]
    # Every method of the path, not only those of the first route Starlette tried.
    advertised = {m.strip() for m in response.headers["allow"].split(",")}
    assert advertised - {"HEAD"} == allowed


# ---------------------------------------------------------------- body validation


async def post_job(
    client: httpx.AsyncClient,
    tenant: Tenant,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    return await client.post(JOBS, headers={**tenant.headers, **(headers or {})}, **kwargs)


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"model": "gpt-4o-mini",}', b"model=gpt-4o-mini", b"\xff\xfe{}"],
    ids=["truncated", "trailing-comma", "form-encoded", "not-utf8"],
)
async def test_malformed_json_is_400(client, tenant, content):
    response = await post_job(client, tenant, content=content, headers=JSON)
    error = assert_envelope(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    assert error["param"] is None


def job_body(*, without: str | None = None, **changes: Any) -> dict[str, Any]:
    """A job request that is valid in shape, with fields changed or one removed."""
    body = {"model": "gpt-4o-mini", "training_file": "file-x", **changes}
    if without is not None:
        del body[without]
    return body


SUPERVISED = "method.supervised"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        pytest.param(
            job_body(without="model"), "model", "missing_required_parameter", id="missing-model"
        ),
        pytest.param(
            job_body(without="training_file"),
            "training_file",
            "missing_required_parameter",
            id="missing-training-file",
        ),
        pytest.param(job_body(model=4), "model", "invalid_type", id="model-int"),
        pytest.param(
            job_body(training_file=["f"]), "training_file", "invalid_type", id="training-file-list"
        ),
        pytest.param(job_body(seed="seven"), "seed", "invalid_type", id="seed-string"),
        pytest.param(job_body(seed=-1), "seed", "invalid_value", id="seed-negative"),
        pytest.param(
            job_body(temperature=1), "temperature", "unknown_parameter", id="unknown-field"
        ),
        pytest.param(job_body(model=""), "model", "invalid_value", id="empty-model"),
        pytest.param(job_body(suffix="a b"), "suffix", "invalid_value", id="bad-suffix"),
        pytest.param(
            job_body(method={"type": "magic"}), "method.type", "invalid_value", id="bad-method-type"
        ),
        pytest.param(
            job_body(
                method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}
            ),
            f"{SUPERVISED}.hyperparameters.n_epochs",
            "invalid_value",
            id="nested-range",
        ),
        pytest.param(
            job_body(method={"type": "supervised", "supervised": {"colour": "red"}}),
            f"{SUPERVISED}.colour",
            "unknown_parameter",
            id="nested-unknown",
        ),
        pytest.param(
            job_body(integrations=[{"type": "wandb", "wandb": {}}]),
            "integrations[0].wandb.project",
            "missing_required_parameter",
            id="nested-missing",
        ),
    ],
)
async def test_invalid_body_is_400_with_param_and_code(client, tenant, body, param, code):
    error = assert_envelope(await post_job(client, tenant, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert param in error["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json"}],
    ids=["no-content-type", "json-content-type"],
)
async def test_empty_body_to_create_job_is_400(client, tenant, headers):
    response = await post_job(client, tenant, content=b"", headers=headers)
    error = assert_envelope(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert error["code"] is not None


@pytest.mark.parametrize("content", [b"[]", b"null", b'"model"', b"42"])
async def test_body_that_is_not_an_object_is_400(client, tenant, content):
    response = await post_job(client, tenant, content=content, headers=JSON)
    error = assert_envelope(response, 400)
    assert error["param"] is None


async def test_body_less_posts_accept_the_sdks_empty_json(client, tenant):
    """The SDK sends cancel/pause/resume with `content-type: application/json` and no body."""
    job = await make_job(client, tenant)
    for action, status in (("pause", "paused"), ("resume", "queued"), ("cancel", "cancelled")):
        response = await client.post(
            f"{JOBS}/{job['id']}/{action}",
            headers={**tenant.headers, "Content-Type": "application/json", "Content-Length": "0"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status


@pytest.mark.parametrize(
    ("path", "params", "param", "code"),
    [
        (JOBS, {"limit": 0}, "limit", "invalid_value"),
        (JOBS, {"limit": "ten"}, "limit", "invalid_type"),
        (JOBS, {"after": "x" * 65}, "after", "invalid_value"),
        ("/v1/files", {"order": "random"}, "order", "invalid_value"),
    ],
)
async def test_invalid_query_is_400_with_param(client, tenant, path, params, param, code):
    error = assert_envelope(await client.get(path, headers=tenant.headers, params=params), 400)
    assert error["param"] == param
    assert error["code"] == code


async def test_state_conflict_uses_the_envelope(client, tenant):
    job = await make_job(client, tenant)
    await client.post(f"{JOBS}/{job['id']}/cancel", headers=tenant.headers)
    response = await client.post(f"{JOBS}/{job['id']}/resume", headers=tenant.headers)
    error = assert_envelope(response, 400)
    assert error["code"] == "job_not_paused"


# ---------------------------------------------------------------- unexpected errors


async def test_unexpected_crash_is_a_500_envelope_without_details(app, client, tenant):
    async def explode() -> None:
        raise RuntimeError("secret connection string postgres://u:p@host")

    app.add_api_route("/v1/test-explode", explode, methods=["GET"])
    response = await client.get("/v1/test-explode", headers=tenant.headers)
    error = assert_envelope(response, 500)
    assert error["type"] == "server_error"
    assert "secret" not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]  # so that support can find the log line


# ---------------------------------------------------------------- request ids


async def _various_requests(client: httpx.AsyncClient, tenant: Tenant) -> list[httpx.Response]:
    file_id = await make_file(client, tenant)
    h = tenant.headers
    return [
        await client.get("/healthz"),
        await client.get("/v1/files", headers=h),
        await client.get(f"/v1/files/{file_id}/content", headers=h),
        await client.post(JOBS, headers=h, json={"model": "gpt-4o-mini", "training_file": file_id}),
        await client.get("/v1/files"),  # 401
        await client.get("/v1/files/file-missing", headers=h),  # 404
        await client.get("/v1/nope"),  # 404 route
        await client.put("/v1/files", headers=h),  # 405
        await client.post(JOBS, headers=h, content=b"{"),  # 400 json
        await client.post(JOBS, headers=h, json={}),  # 400 validation
        await client.post(  # 400 training data
            "/v1/files", headers=h, data={"purpose": "fine-tune"}, files={"file": ("t", b"x")}
        ),
        await client.get("/v1/organization/projects", headers=h),  # 403
        await client.get("/openapi.json"),
    ]


async def test_every_response_has_a_unique_request_id(client, tenant):
    responses = await _various_requests(client, tenant)
    statuses = {r.status_code for r in responses}
    assert {200, 400, 401, 403, 404, 405} <= statuses
    ids = []
    for response in responses:
        request_id = response.headers.get("x-request-id")
        assert request_id is not None, (response.request.url, response.status_code)
        assert request_id.startswith("req_") and len(request_id) > len("req_")
        ids.append(request_id)
    assert len(set(ids)) == len(ids)


async def test_request_id_is_not_taken_from_the_client(client):
    response = await client.get("/healthz", headers={"x-request-id": "req_mine"})
    assert response.headers.get_list("x-request-id") != ["req_mine"]
    assert len(response.headers.get_list("x-request-id")) == 1


# ---------------------------------------------------------------- health and documentation


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute of the app, descending into included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)
        elif isinstance(getattr(route, "routes", None), list):
            yield from api_routes(route.routes)


async def test_openapi_lists_every_route_with_operation_id_and_tag(app, client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    declared_tags = {t["name"] for t in spec.get("tags", [])}

    routes = list(api_routes(app.router.routes))
    assert len(routes) >= 24
    operation_ids = []
    for route in routes:
        if not route.include_in_schema:
            continue
        path = re.sub(r":\w+}", "}", route.path)  # the document drops {name:path} converters
        assert path in paths, path
        for method in route.methods:
            operation = paths[path][method.lower()]
            assert operation.get("operationId"), (method, path)
            assert operation.get("tags"), (method, path)
            assert set(operation["tags"]) <= declared_tags, (method, path)
            operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"

    expected = {
        "createFile",
        "listFiles",
        "retrieveFile",
        "deleteFile",
        "downloadFile",
        "checkFile",
        "createFineTuningJob",
        "listFineTuningJobs",
        "retrieveFineTuningJob",
        "cancelFineTuningJob",
        "pauseFineTuningJob",
        "resumeFineTuningJob",
        "listFineTuningEvents",
        "listFineTuningJobCheckpoints",
        "createFineTuningCheckpointPermission",
        "listFineTuningCheckpointPermissions",
        "deleteFineTuningCheckpointPermission",
        "listModels",
        "retrieveModel",
        "deleteModel",
        "createProject",
        "listProjects",
        "createProjectApiKey",
        "health",
    }
    assert expected <= set(operation_ids)


async def test_openapi_marks_the_routes_that_take_no_key(client):
    spec = (await client.get("/openapi.json")).json()
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert spec["paths"]["/v1/webhooks/{provider}"]["post"]["security"] == []
    assert "security" not in spec["paths"]["/v1/files"]["post"]


async def test_openapi_routes_all_answer(app, client):
    """Every path in the document is served (no stale entries)."""
    spec = (await client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method in operations:
            url = path.replace("{", "").replace("}", "")
            response = await client.request(method.upper(), url)
            assert response.status_code != 404 or response.json()["error"]["message"] != (
                f"Invalid URL ({method.upper()} {url})"
            ), (method, path)


async def test_docs_page(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text


async def test_healthz_answers_head_for_load_balancers(client):
    response = await client.head("/healthz")
    assert response.status_code == 200
