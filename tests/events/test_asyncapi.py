"""The AsyncAPI document of the event streams: self-contained, and its message schemas accept what
the server sends and refuse what it never sends."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft7Validator
from pydantic import BaseModel
from referencing import Registry
from referencing.jsonschema import DRAFT7

from service.events.asyncapi import asyncapi_document
from service.events.messages import (
    CLOSE_CODES,
    EventMessage,
    HeartbeatMessage,
    JobMessage,
    JobProgress,
)
from service.jobs.schemas import EventObject, Hyperparameters, JobError, JobObject

DOC_URI = "urn:iaposte-finetune:asyncapi"
JOB_ID = "ftjob-UiaiLwGdGBfdLQDBAoQheufN"
METHOD = {
    "type": "supervised",
    "supervised": {
        "hyperparameters": {"batch_size": 1, "learning_rate_multiplier": 2.0, "n_epochs": 3}
    },
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(version="0.1.0")


def job(**changes: Any) -> JobObject:
    fields: dict[str, Any] = {
        "id": JOB_ID,
        "created_at": 1_767_225_600,
        "hyperparameters": Hyperparameters(batch_size=1, learning_rate_multiplier=2.0, n_epochs=3),
        "model": "gpt-4o-mini-2024-07-18",
        "organization_id": "org-personal",
        "result_files": [],
        "seed": 42,
        "status": "running",
        "training_file": "file-abc123abc123abc123abc123",
        "method": METHOD,
        "metadata": {"mailbox": "support"},
    }
    return JobObject(**(fields | changes))


# Every message the server sends, in realistic states.
SENT: dict[str, list[BaseModel]] = {
    "event": [
        EventMessage(
            job_id=JOB_ID,
            event=EventObject(
                id="ftevent-TDcK6kP2mRRiof75k5YpPXzb",
                created_at=1_767_225_660,
                level="info",
                message="Fine-tuning job started",
            ),
        ),
        EventMessage(
            job_id=JOB_ID,
            event=EventObject(
                id="ftevent-Q2pV8xLmN4rT6yB1cZ3dF5gH",
                created_at=1_767_225_720,
                level="info",
                message="Step 12/30: training loss=0.84",
                type="metrics",
                data={"step": 12, "total_steps": 30, "train_loss": 0.84},
            ),
        ),
    ],
    "job": [
        JobMessage(job=job(status="queued")),
        JobMessage(job=job(), progress=JobProgress(step=12, total_steps=30)),
        JobMessage(
            job=job(
                status="succeeded",
                finished_at=1_767_226_000,
                fine_tuned_model="ft:gpt-4o-mini-2024-07-18:personal:mail:UiaiLwGd",
                trained_tokens=18_342,
                result_files=["file-res123res123res123res123"],
            ),
            progress=JobProgress(step=30, total_steps=30),
        ),
        JobMessage(
            job=job(
                status="failed",
                finished_at=1_767_226_000,
                error=JobError(code="invalid_training_file", message="Line 3 is not JSON."),
            )
        ),
    ],
    "heartbeat": [HeartbeatMessage(time=1_767_225_615)],
}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def payload_validator(document: dict[str, Any], name: str) -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT7.create_resource(document))
    schema = {"$ref": f"{DOC_URI}#/components/messages/{name}/payload"}
    return Draft7Validator(schema, registry=registry)


def test_document_is_json(document: dict[str, Any]) -> None:
    text = json.dumps(document, allow_nan=False)
    assert json.loads(text) == document
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == "0.1.0"


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert len(found) > 10
    for ref in found:
        resolve(document, ref)


def test_schemas_are_valid_draft7(document: dict[str, Any]) -> None:
    for schema in document["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)
        assert "$defs" not in schema


def test_schemas_are_generated_from_the_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in (EventMessage, JobMessage, HeartbeatMessage, EventObject, JobObject):
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields)


@pytest.mark.parametrize("name", sorted(SENT))
def test_payload_accepts_what_the_server_sends(document: dict[str, Any], name: str) -> None:
    validator = payload_validator(document, name)
    for message in SENT[name]:
        validator.validate(message.model_dump(mode="json"))
        validator.validate(json.loads(message.model_dump_json()))


@pytest.mark.parametrize("name", sorted(SENT))
def test_payload_refuses_a_wrong_or_missing_type(document: dict[str, Any], name: str) -> None:
    validator = payload_validator(document, name)
    sent = SENT[name][0].model_dump(mode="json")
    for other in [*(n for n in SENT if n != name), "metrics", ""]:
        assert not validator.is_valid(sent | {"type": other}), other
    assert not validator.is_valid({k: v for k, v in sent.items() if k != "type"})


def test_payload_refuses_other_messages(document: dict[str, Any]) -> None:
    for name in SENT:
        validator = payload_validator(document, name)
        for other, messages in SENT.items():
            if other != name:
                assert not validator.is_valid(messages[0].model_dump(mode="json"))


def test_channels_parameters_and_bindings(document: dict[str, Any]) -> None:
    channels = document["channels"]
    addresses = {c["address"] for c in channels.values()}
    assert addresses == {
        "/v1/fine_tuning/jobs/{job_id}/events/stream",
        "/v1/fine_tuning/events/stream",
    }
    for channel in channels.values():
        names = set(re.findall(r"{(\w+)}", channel["address"]))
        assert names == set(channel.get("parameters", {}))
        query = channel["bindings"]["ws"]["query"]
        assert query["type"] == "object"
        assert set(query["properties"]) == {"after", "ticket"}
        assert set(channel["messages"]) == {"event", "job", "heartbeat"}
        Draft7Validator.check_schema(query)
        after = Draft7Validator(query["properties"]["after"])
        assert after.is_valid("ftevent-TDcK6kP2mRRiof75k5YpPXzb")
        assert not after.is_valid("ftjob-UiaiLwGdGBfdLQDBAoQheufN")


def test_close_codes_come_from_the_code(document: dict[str, Any]) -> None:
    by_address = {c["address"]: c["x-close-codes"] for c in document["channels"].values()}
    job_codes = by_address["/v1/fine_tuning/jobs/{job_id}/events/stream"]
    assert job_codes == {str(code): text for code, text in CLOSE_CODES.items()}
    project_codes = by_address["/v1/fine_tuning/events/stream"]
    assert set(project_codes) == set(job_codes) - {"1000", "4404"}
    description = document["info"]["description"]
    for code in CLOSE_CODES:
        assert f"| {code} |" in description


def test_operations_send_the_three_messages(document: dict[str, Any]) -> None:
    operations = document["operations"].values()
    assert len(operations) == 2
    channels = set()
    for operation in operations:
        assert operation["action"] == "send"
        channel_ref = operation["channel"]["$ref"]
        channels.add(channel_ref)
        for message in operation["messages"]:
            # AsyncAPI 3 requires an operation's messages to be its channel's.
            assert message["$ref"].startswith(channel_ref + "/messages/")
    assert channels == {f"#/channels/{name}" for name in document["channels"]}


def test_security_bearer_or_ticket(document: dict[str, Any]) -> None:
    (server,) = document["servers"].values()
    assert server["protocol"] == "ws"
    schemes = [resolve(document, s["$ref"]) for s in server["security"]]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes[0].items()
    assert {"type": "httpApiKey", "in": "query", "name": "ticket"}.items() <= schemes[1].items()
