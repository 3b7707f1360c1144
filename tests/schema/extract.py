"""Derive tests/schema/openai_schemas.json from OpenAI's published OpenAPI document.

Run by hand when the pinned spec changes (the tests only read the kept JSON, CI has no network):

    git clone https://github.com/openai/openai-openapi && git -C openai-openapi checkout <sha>
    .venv/bin/python tests/schema/extract.py openai-openapi/openapi.yaml <sha>

It keeps the response schemas of the routes this service shares with OpenAI and everything they
reference, as JSON Schema 2020-12 `$defs`, after three conversions:
- OpenAPI 3.0 leftovers in the 3.1 document: `nullable: true` becomes `anyOf [..., null]`
  (also where it hides in an `allOf` member, as in `Upload.file`), and a boolean
  `exclusiveMinimum`/`exclusiveMaximum` becomes the numeric bound of 2020-12;
- descriptions and examples are dropped (the validator does not read them);
- one deliberate deviation, recorded under `deviations`: a job's `status` may be `paused`, which
  OpenAI's pause endpoint returns although the enum omits it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = "https://github.com/openai/openai-openapi/blob/{commit}/openapi.yaml"
OUTPUT = Path(__file__).with_name("openai_schemas.json")
ROOTS = (
    "OpenAIFile",
    "DeleteFileResponse",
    "ListFilesResponse",
    "Upload",
    "UploadPart",
    "FineTuningJob",
    "ListPaginatedFineTuningJobsResponse",
    "FineTuningJobEvent",
    "ListFineTuningJobEventsResponse",
    "FineTuningJobCheckpoint",
    "ListFineTuningJobCheckpointsResponse",
    "FineTuningCheckpointPermission",
    "ListFineTuningCheckpointPermissionResponse",
    "DeleteFineTuningCheckpointPermissionResponse",
    "Model",
    "ListModelsResponse",
    "DeleteModelResponse",
    "ErrorResponse",
    "WebhookFineTuningJobSucceeded",
    "WebhookFineTuningJobFailed",
    "WebhookFineTuningJobCancelled",
)
DROPPED_KEYS = frozenset({"description", "example", "examples", "x-oaiMeta", "title"})
DEVIATIONS = {
    "FineTuningJob.status": "adds `paused`: OpenAI's pause endpoint answers it (its own example), "
    "the enum omits it",
}
REF_PREFIX = "#/components/schemas/"


def _referenced(schemas: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    """Return the roots and every schema they reach through `$ref`, sorted."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        stack: list[Any] = [schemas[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith(REF_PREFIX):
                    pending.append(ref.removeprefix(REF_PREFIX))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return sorted(seen)


def _convert(node: Any) -> Any:
    """Turn one OpenAPI schema node into JSON Schema 2020-12 (see the module docstring)."""
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    # `nullable` in an `allOf` member makes the whole value nullable: take it out before the
    # member is converted, or it would become an `anyOf` that accepts anything.
    nullable = node.get("nullable", False) is True
    members = []
    for member in node.get("allOf", []):
        nullable |= member.get("nullable", False) is True
        rest = {k: v for k, v in member.items() if k != "nullable" and k not in DROPPED_KEYS}
        if rest:
            members.append(rest)
    node = {k: v for k, v in node.items() if k not in DROPPED_KEYS and k != "nullable"}
    if "allOf" in node:
        node["allOf"] = members
    out = {k: _convert(v) for k, v in node.items()}
    if "$ref" in out:
        out["$ref"] = "#/$defs/" + out["$ref"].removeprefix(REF_PREFIX)
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            del out[exclusive]
    if nullable:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def extract(document: dict[str, Any], commit: str) -> dict[str, Any]:
    """Return the kept bundle: `$defs` of the response schemas, and where they came from."""
    schemas = document["components"]["schemas"]
    defs = {name: _convert(schemas[name]) for name in _referenced(schemas, ROOTS)}
    defs["FineTuningJob"]["properties"]["status"]["enum"].append("paused")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "source": SOURCE.format(commit=commit),
        "commit": commit,
        "openapi": document["openapi"],
        "roots": list(ROOTS),
        "deviations": DEVIATIONS,
        "$defs": defs,
    }


def main() -> None:
    """Read the spec named on the command line and write the bundle beside this script."""
    path, commit = Path(sys.argv[1]), sys.argv[2]
    if len(commit) != 40:
        raise SystemExit("give the full 40-character commit sha")
    document = yaml.safe_load(path.read_text())
    bundle = extract(document, commit)
    OUTPUT.write_text(json.dumps(bundle, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
