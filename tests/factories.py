"""Plain async factories for test data: projects with keys, training files, jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from service.db import Database
from service.projects import service as projects


@dataclass(frozen=True)
class Tenant:
    """A project and one of its keys, ready to send requests."""

    project_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_tenant(database: Database, name: str = "acme", *, admin: bool = False) -> Tenant:
    """Create a project with one API key."""
    async with database.session() as session:
        project = await projects.get_project_by_name(session=session, name=name)
        if project is None:
            project = await projects.create_project(session=session, name=name)
        new = await projects.create_api_key(session=session, project=project, name="t", admin=admin)
    return Tenant(project_id=project.id, key=new.value)


EMAIL_PAIRS = [
    (
        "Remercie Mme Durand pour sa commande de 12 chaises.",
        "Bonjour Madame Durand,\n\nMerci pour votre commande de 12 chaises. Elle sera livrée "
        "sous huit jours.\n\nCordialement,\nL'équipe commerciale",
    ),
    (
        "Confirm the meeting with Mr. Okafor on Tuesday at 10am.",
        "Dear Mr. Okafor,\n\nI am writing to confirm our meeting on Tuesday at 10am.\n\n"
        "Kind regards,\nRomain",
    ),
    (
        "Informe le client que son ticket est transmis à l'équipe technique.",
        "Bonjour,\n\nVotre demande a été transmise à notre équipe technique, qui reviendra vers "
        "vous sous 48 heures.\n\nBien cordialement,\nLe support",
    ),
]


def chat_example(i: int = 0) -> dict[str, Any]:
    """One supervised example: a department prompt, a request and a good email."""
    request, email = EMAIL_PAIRS[i % len(EMAIL_PAIRS)]
    return {
        "messages": [
            {"role": "system", "content": "Tu rédiges des emails professionnels."},
            {"role": "user", "content": f"{request} (#{i})"},
            {"role": "assistant", "content": email},
        ]
    }


def preference_example(i: int = 0) -> dict[str, Any]:
    """One DPO example: the good email preferred to a curt one."""
    request, email = EMAIL_PAIRS[i % len(EMAIL_PAIRS)]
    return {
        "input": {"messages": [{"role": "user", "content": f"{request} (#{i})"}]},
        "preferred_output": [{"role": "assistant", "content": email}],
        "non_preferred_output": [{"role": "assistant", "content": "ok merci"}],
    }


def reinforcement_example(i: int = 0) -> dict[str, Any]:
    """One RFT example: a prompt and the reference the grader compares with."""
    request, email = EMAIL_PAIRS[i % len(EMAIL_PAIRS)]
    return {
        "messages": [{"role": "user", "content": f"{request} (#{i})"}],
        "reference_answer": email,
    }


def jsonl(examples: list[dict[str, Any]]) -> bytes:
    """Serialise examples as JSON Lines."""
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples).encode()


def chat_file(n: int = 12) -> bytes:
    """A valid supervised training file of n examples."""
    return jsonl([chat_example(i) for i in range(n)])


async def upload(
    client: httpx.AsyncClient,
    tenant: Tenant,
    content: bytes,
    *,
    purpose: str = "fine-tune",
    filename: str = "train.jsonl",
) -> httpx.Response:
    """POST /v1/files with multipart content."""
    return await client.post(
        "/v1/files",
        headers=tenant.headers,
        data={"purpose": purpose},
        files={"file": (filename, content, "application/jsonl")},
    )


async def make_file(client: httpx.AsyncClient, tenant: Tenant, content: bytes | None = None) -> str:
    """Upload a training file and return its id."""
    response = await upload(client, tenant, content if content is not None else chat_file())
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


async def make_job(
    client: httpx.AsyncClient, tenant: Tenant, *, model: str = "gpt-4o-mini", **body: Any
) -> dict[str, Any]:
    """Create a supervised job on a fresh training file and return it."""
    if "training_file" not in body:
        body["training_file"] = await make_file(client, tenant)
    response = await client.post(
        "/v1/fine_tuning/jobs", headers=tenant.headers, json={"model": model, **body}
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def job_method(kind: str = "supervised", **hyperparameters: Any) -> dict[str, Any]:
    """The `method` field of a job request: its type and that type's hyperparameters."""
    return {"type": kind, kind: {"hyperparameters": hyperparameters}}


async def get_job(client: httpx.AsyncClient, tenant: Tenant, job_id: str) -> dict[str, Any]:
    """GET a fine-tuning job and return its body."""
    response = await client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers)
    job: dict[str, Any] = response.json()
    return job


def preference_file(n: int = 10) -> bytes:
    """A valid DPO training file of n examples."""
    return jsonl([preference_example(i) for i in range(n)])


def reinforcement_file(n: int = 10) -> bytes:
    """A valid reinforcement training file of n examples."""
    return jsonl([reinforcement_example(i) for i in range(n)])


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """Check an error answer has OpenAI's envelope and return its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error
