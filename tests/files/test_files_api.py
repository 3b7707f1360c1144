"""The files API over HTTP: upload, retrieve, list, download, delete, expiry, training-data
checks at upload, and `POST /v1/files/{id}/check`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.models.registry import ALL_METHODS, BaseModelSpec
from service.settings import Settings
from tests.factories import (
    Tenant,
    assert_envelope,
    chat_example,
    chat_file,
    jsonl,
    make_tenant,
    preference_example,
    reinforcement_example,
    upload,
)
from tests.fake_engine import FAKE, fake_engines

SMALL_LIMIT = 2048


# ---------------------------------------------------------------- helpers


def stored_paths(settings: Settings) -> list[Path]:
    """Every file under the files folder, its tmp/ subfolder included."""
    if not settings.files_dir.exists():
        return []
    return sorted(p for p in settings.files_dir.rglob("*") if p.is_file())


async def list_files(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/files", headers=tenant.headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_nothing_stored(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    listed = await list_files(client, tenant)
    assert listed["data"] == []
    assert stored_paths(settings) == []


async def upload_ok(
    client: httpx.AsyncClient, tenant: Tenant, content: bytes, **options: Any
) -> dict[str, Any]:
    response = await upload(client, tenant, content, **options)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def upload_fields(
    client: httpx.AsyncClient,
    tenant: Tenant,
    fields: dict[str, str],
    content: bytes | None = b"",
) -> httpx.Response:
    """POST /v1/files with the given form fields and, unless None, a file part."""
    parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in fields.items()]
    if content is not None:
        parts.append(("file", ("train.jsonl", content, "application/jsonl")))
    return await client.post("/v1/files", headers=tenant.headers, files=parts)


def chat_lines(n: int = 12) -> list[bytes]:
    """A valid chat file as a list of lines (without newlines), to corrupt one of them."""
    return chat_file(n).splitlines()


def with_line(line_number: int, raw: bytes, n: int = 12) -> bytes:
    """A valid chat file whose line `line_number` (1-based) is replaced by `raw`."""
    lines = chat_lines(n)
    lines[line_number - 1] = raw
    return b"\n".join(lines) + b"\n"


@pytest.fixture
async def tenant(database) -> Tenant:
    return await make_tenant(database)


# ---------------------------------------------------------------- the happy path


async def test_upload_retrieve_download_delete(client, tenant, settings):
    content = chat_file()
    created = await upload_ok(client, tenant, content, filename="emails.jsonl")

    assert created["id"].startswith("file-") and len(created["id"]) == len("file-") + 24
    assert created["object"] == "file"
    assert created["bytes"] == len(content)
    assert isinstance(created["created_at"], int)
    assert "expires_at" not in created  # OpenAI leaves it out when the file never expires
    assert created["filename"] == "emails.jsonl"
    assert created["purpose"] == "fine-tune"
    assert created["status"] == "processed"
    assert created["sha256"] == hashlib.sha256(content).hexdigest()
    assert created["format"] == "chat"

    retrieved = await client.get(f"/v1/files/{created['id']}", headers=tenant.headers)
    assert retrieved.status_code == 200
    assert retrieved.json() == created

    downloaded = await client.get(f"/v1/files/{created['id']}/content", headers=tenant.headers)
    assert downloaded.status_code == 200
    assert downloaded.content == content
    assert hashlib.sha256(downloaded.content).hexdigest() == created["sha256"]

    assert (settings.files_dir / created["id"]).read_bytes() == content

    deleted = await client.delete(f"/v1/files/{created['id']}", headers=tenant.headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}

    for path in (f"/v1/files/{created['id']}", f"/v1/files/{created['id']}/content"):
        error = assert_envelope(await client.get(path, headers=tenant.headers), 404)
        assert created["id"] in error["message"]
        assert error["type"] == "invalid_request_error"
    assert_envelope(await client.delete(f"/v1/files/{created['id']}", headers=tenant.headers), 404)
    await assert_nothing_stored(client, tenant, settings)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (chat_file(), "chat"),
        (jsonl([preference_example(i) for i in range(10)]), "preference"),
        (jsonl([reinforcement_example(i) for i in range(10)]), "reinforcement"),
    ],
    ids=["chat", "preference", "reinforcement"],
)
async def test_detected_format(client, tenant, content, expected):
    created = await upload_ok(client, tenant, content)
    assert created["format"] == expected
    retrieved = await client.get(f"/v1/files/{created['id']}", headers=tenant.headers)
    assert retrieved.json()["format"] == expected


async def test_other_purposes_are_stored_without_parsing(client, tenant):
    content = b"\x00\xffnot json at all, not even UTF-8 \xfe"
    created = await upload_ok(client, tenant, content, purpose="batch", filename="blob.bin")
    assert created["purpose"] == "batch"
    assert created["format"] is None
    assert created["bytes"] == len(content)
    downloaded = await client.get(f"/v1/files/{created['id']}/content", headers=tenant.headers)
    assert downloaded.status_code == 200
    assert downloaded.content == content


@pytest.mark.parametrize("purpose", ["user_data", "assistants"])
async def test_download_of_non_downloadable_purpose_is_refused(client, tenant, purpose):
    created = await upload_ok(client, tenant, b"private", purpose=purpose)
    response = await client.get(f"/v1/files/{created['id']}/content", headers=tenant.headers)
    error = assert_envelope(response, 400)
    assert error == {
        "message": f"Not allowed to download files of purpose: {purpose}",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# ---------------------------------------------------------------- listing


async def test_list_orders_filters_and_pages(client, tenant):
    tune = [(await upload_ok(client, tenant, chat_file()))["id"] for _ in range(3)]
    batch = [(await upload_ok(client, tenant, b"x", purpose="batch"))["id"] for _ in range(2)]
    everything = tune + batch  # in creation order

    listed = await list_files(client, tenant)
    assert listed["object"] == "list"
    assert [f["id"] for f in listed["data"]] == everything[::-1]  # newest first by default
    assert listed["has_more"] is False
    assert listed["first_id"] == everything[-1]
    assert listed["last_id"] == everything[0]
    assert all(f["object"] == "file" for f in listed["data"])

    ascending = await list_files(client, tenant, order="asc")
    assert [f["id"] for f in ascending["data"]] == everything
    descending = await list_files(client, tenant, order="desc")
    assert [f["id"] for f in descending["data"]] == everything[::-1]

    only_tune = await list_files(client, tenant, purpose="fine-tune", order="asc")
    assert [f["id"] for f in only_tune["data"]] == tune
    only_batch = await list_files(client, tenant, purpose="batch")
    assert [f["id"] for f in only_batch["data"]] == batch[::-1]
    assert (await list_files(client, tenant, purpose="vision"))["data"] == []


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_cursor_pagination_walks_every_file_once(client, tenant, order):
    ids = [(await upload_ok(client, tenant, b"x", purpose="batch"))["id"] for _ in range(5)]
    expected = ids if order == "asc" else ids[::-1]

    seen: list[str] = []
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2, "order": order}
    while True:
        page = await list_files(client, tenant, **params)
        pages.append(page)
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        params["after"] = page["last_id"]

    assert seen == expected
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    for p in pages:
        assert p["first_id"] == p["data"][0]["id"]
        assert p["last_id"] == p["data"][-1]["id"]

    empty = await list_files(client, tenant, order=order, after=expected[-1])
    assert empty == {
        "object": "list",
        "data": [],
        "has_more": False,
        # OpenAI's schema requires both ids, as strings, even on an empty page.
        "first_id": "",
        "last_id": "",
    }


async def test_exact_page_has_no_more(client, tenant):
    for _ in range(3):
        await upload_ok(client, tenant, b"x", purpose="batch")
    page = await list_files(client, tenant, limit=3)
    assert len(page["data"]) == 3
    assert page["has_more"] is False


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "file-doesnotexist000000000000"}, "after"),
    ],
)
async def test_list_rejects_bad_parameters(client, tenant, params, param):
    response = await client.get("/v1/files", headers=tenant.headers, params=params)
    error = assert_envelope(response, 400)
    assert error["param"] == param


async def test_after_a_deleted_file_is_an_unknown_cursor(client, tenant):
    first = (await upload_ok(client, tenant, b"x", purpose="batch"))["id"]
    await upload_ok(client, tenant, b"y", purpose="batch")
    await client.delete(f"/v1/files/{first}", headers=tenant.headers)
    response = await client.get("/v1/files", headers=tenant.headers, params={"after": first})
    assert assert_envelope(response, 400)["param"] == "after"


# ---------------------------------------------------------------- expiry


@pytest.mark.parametrize("seconds", [3600, 86_400, 2_592_000])
async def test_expires_after_sets_expires_at(client, tenant, seconds):
    response = await upload_fields(
        client,
        tenant,
        {
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": str(seconds),
        },
        b"x",
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["expires_at"] == created["created_at"] + seconds
    listed = await list_files(client, tenant)
    assert listed["data"][0]["expires_at"] == created["expires_at"]


@pytest.mark.parametrize(
    ("purpose", "lifetime"),
    [("batch", 30 * 24 * 3600), ("fine-tune", None), ("user_data", None)],
)
async def test_default_expiry_by_purpose(client, tenant, purpose, lifetime):
    """Batch files expire after 30 days unless told otherwise; other purposes persist."""
    content = chat_file() if purpose == "fine-tune" else b"x"
    created = await upload_ok(client, tenant, content, purpose=purpose)
    expected = None if lifetime is None else created["created_at"] + lifetime
    assert created.get("expires_at") == expected  # left out when the file never expires


@pytest.mark.parametrize(
    ("anchor", "seconds", "param"),
    [
        ("last_active_at", "3600", "expires_after.anchor"),
        (None, "3600", "expires_after.anchor"),
        ("created_at", None, "expires_after.seconds"),
        ("created_at", "3599", "expires_after.seconds"),
        ("created_at", "2592001", "expires_after.seconds"),
        ("created_at", "an hour", "expires_after.seconds"),
        ("created_at", "-3600", "expires_after.seconds"),
        ("created_at", "\u00b2", "expires_after.seconds"),  # str.isdigit() says yes
        ("created_at", "\uff13\uff16\uff10\uff10", "expires_after.seconds"),  # full-width 3600
    ],
    ids=[
        "bad-anchor",
        "no-anchor",
        "no-seconds",
        "too-short",
        "too-long",
        "not-a-number",
        "negative",
        "superscript-digit",
        "full-width-digits",
    ],
)
async def test_expires_after_is_validated(client, tenant, settings, anchor, seconds, param):
    fields = {"purpose": "batch"}
    if anchor is not None:
        fields["expires_after[anchor]"] = anchor
    if seconds is not None:
        fields["expires_after[seconds]"] = seconds
    error = assert_envelope(await upload_fields(client, tenant, fields, b"x"), 400)
    assert error["param"] == param
    await assert_nothing_stored(client, tenant, settings)


async def test_expired_file_behaves_as_deleted(client, tenant, monkeypatch):
    response = await upload_fields(
        client,
        tenant,
        {
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
        b"x",
    )
    file_id = response.json()["id"]
    kept = await upload_ok(client, tenant, b"y", purpose="batch")

    import service.files.service as files_service

    later = files_service.now() + 3601
    monkeypatch.setattr(files_service, "now", lambda: later)

    assert_envelope(await client.get(f"/v1/files/{file_id}", headers=tenant.headers), 404)
    content = await client.get(f"/v1/files/{file_id}/content", headers=tenant.headers)
    assert_envelope(content, 404)
    assert [f["id"] for f in (await list_files(client, tenant))["data"]] == [kept["id"]]


# ---------------------------------------------------------------- malformed training data


def _utf16_file(encoding: str = "utf-16") -> bytes:
    return chat_file().decode("utf-8").encode(encoding)


def _no_assistant_on_line_5() -> bytes:
    example = chat_example(4)
    example["messages"] = [m for m in example["messages"] if m["role"] != "assistant"]
    return with_line(5, json.dumps(example).encode())


def _unknown_role_on_line_3() -> bytes:
    example = chat_example(2)
    example["messages"][0]["role"] = "narrator"
    return with_line(3, json.dumps(example).encode())


def _preference_on_line_4() -> bytes:
    return with_line(4, json.dumps(preference_example(3)).encode())


MALFORMED = [
    pytest.param(with_line(2, b'{"messages": [}'), 2, "invalid_json", id="not-json"),
    pytest.param(with_line(7, b'[{"role": "user"}]'), 7, "data_type", id="array-line"),
    pytest.param(
        with_line(3, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'),
        3,
        "invalid_encoding",
        id="bad-utf8",
    ),
    pytest.param(_utf16_file(), 1, "invalid_encoding", id="utf16-file"),
    pytest.param(_utf16_file("utf-16-le"), 1, "invalid_encoding", id="utf16-file-without-bom"),
    pytest.param(
        # Lines 2 and 4 are blank, the 12 examples end on line 14: the bad line is line 15.
        chat_file(12).replace(b"\n", b"\n\n", 2) + b"{oops\n",
        15,
        "invalid_json",
        id="line-numbers-count-blank-lines",
    ),
    pytest.param(_unknown_role_on_line_3(), 3, "unrecognized_role", id="unknown-role"),
    pytest.param(
        _no_assistant_on_line_5(), 5, "example_missing_assistant_message", id="no-assistant"
    ),
    pytest.param(_preference_on_line_4(), 4, "mixed_formats", id="mixed-formats"),
]


@pytest.mark.parametrize(("content", "line", "code"), MALFORMED)
async def test_malformed_training_file_is_refused_and_nothing_stored(
    client, tenant, settings, content, line, code
):
    error = assert_envelope(await upload(client, tenant, content), 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] == "file"
    assert f"Line {line}" in error["message"], error["message"]
    await assert_nothing_stored(client, tenant, settings)


async def test_utf16_message_names_the_encoding(client, tenant):
    error = assert_envelope(await upload(client, tenant, _utf16_file()), 400)
    assert "UTF-16" in error["message"]


async def test_every_bad_line_is_counted_in_the_message(client, tenant):
    lines = chat_lines()
    lines[1] = b"not json"
    lines[8] = b"[]"
    error = assert_envelope(await upload(client, tenant, b"\n".join(lines)), 400)
    assert "Line 2" in error["message"]
    assert "1 more error" in error["message"]


@pytest.mark.parametrize("n", [0, 1, 9])
async def test_fewer_than_ten_examples_is_refused(client, tenant, settings, n):
    error = assert_envelope(await upload(client, tenant, chat_file(n)), 400)
    assert error["code"] == "too_few_examples"
    assert error["param"] == "file"
    assert f"{n} example" in error["message"]
    await assert_nothing_stored(client, tenant, settings)


async def test_ten_examples_are_enough(client, tenant):
    assert (await upload_ok(client, tenant, chat_file(10)))["format"] == "chat"


@pytest.mark.parametrize(
    "content",
    [
        chat_file().replace(b"\n", b"\r\n"),
        b"\xef\xbb\xbf" + chat_file(),
        chat_file().rstrip(b"\n"),
        b"\n" + chat_file().replace(b"\n", b"\n\n"),
    ],
    ids=["crlf", "utf8-bom", "no-final-newline", "blank-lines"],
)
async def test_common_text_variants_are_accepted(client, tenant, content):
    created = await upload_ok(client, tenant, content)
    assert created["format"] == "chat"
    assert created["bytes"] == len(content)
    downloaded = await client.get(f"/v1/files/{created['id']}/content", headers=tenant.headers)
    assert downloaded.content == content


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("../../etc/evil.jsonl", "evil.jsonl"), ("C:\\Users\\me\\train.jsonl", "train.jsonl")],
)
async def test_filename_is_reduced_to_its_base_name(client, tenant, settings, sent, kept):
    created = await upload_ok(client, tenant, chat_file(), filename=sent)
    assert created["filename"] == kept
    assert stored_paths(settings) == [settings.files_dir / created["id"]]


async def test_purpose_after_the_file_part_still_parses(client, tenant, settings):
    bad = with_line(2, b"not json")
    response = await client.post(
        "/v1/files",
        headers=tenant.headers,
        files=[
            ("file", ("train.jsonl", bad, "application/jsonl")),
            ("purpose", (None, "fine-tune")),
        ],
    )
    error = assert_envelope(response, 400)
    assert "Line 2" in error["message"]
    await assert_nothing_stored(client, tenant, settings)


# ---------------------------------------------------------------- form problems


@pytest.mark.parametrize(
    ("fields", "content", "param"),
    [
        ({}, chat_file(), "purpose"),
        ({"purpose": "fine-tune"}, None, "file"),
        ({"purpose": "training"}, chat_file(), "purpose"),
        ({"purpose": "fine-tune-results"}, chat_file(), "purpose"),
        ({"purpose": "fine-tune", "colour": "blue"}, chat_file(), "colour"),
    ],
    ids=["missing-purpose", "missing-file", "bad-purpose", "output-purpose", "unknown-field"],
)
async def test_bad_form_is_refused_with_param(client, tenant, settings, fields, content, param):
    error = assert_envelope(await upload_fields(client, tenant, fields, content), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    await assert_nothing_stored(client, tenant, settings)


def _raw(*parts: bytes, end: bool = True) -> bytes:
    """A multipart body with boundary `bnd` from already framed parts."""
    body = b"".join(b"--bnd\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--bnd--\r\n" if end else b"")


_PURPOSE = b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch'
_FILE = b'Content-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\nhello'


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_raw(_PURPOSE, _PURPOSE, _FILE), "purpose"),
        (_raw(_PURPOSE, _FILE, _FILE), "file"),
        (_raw(_PURPOSE, _FILE.replace(b'"file"', b'"data"')), "data"),
        (_raw(_PURPOSE.replace(b"batch", b"b" * 5000), _FILE), "purpose"),
        (_raw(_PURPOSE, _FILE, end=False)[:-2], "file"),
        (b"this is not multipart at all", None),
    ],
    ids=[
        "purpose-twice",
        "two-files",
        "file-under-other-name",
        "huge-field",
        "truncated",
        "garbage",
    ],
)
async def test_broken_multipart_is_refused(client, tenant, settings, body, param):
    response = await client.post(
        "/v1/files",
        headers={**tenant.headers, "Content-Type": "multipart/form-data; boundary=bnd"},
        content=body,
    )
    error = assert_envelope(response, 400)
    assert error["param"] == param
    await assert_nothing_stored(client, tenant, settings)


async def test_not_multipart_is_refused(client, tenant, settings):
    response = await client.post(
        "/v1/files", headers=tenant.headers, json={"purpose": "fine-tune", "file": "abc"}
    )
    assert_envelope(response, 400)
    await assert_nothing_stored(client, tenant, settings)


# ---------------------------------------------------------------- size limit


@pytest.fixture
async def small_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app that accepts files of at most SMALL_LIMIT bytes."""
    small: FastAPI = create_app(
        settings.model_copy(update={"max_upload_bytes": SMALL_LIMIT}), engines=fake_engines()
    )
    async with small.router.lifespan_context(small):
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.mark.parametrize(
    "size",
    [SMALL_LIMIT + 1, 20 * SMALL_LIMIT, 200 * 1024],
    ids=["one-byte-over", "streamed-over", "declared-over"],
)
async def test_upload_over_the_limit_is_413(small_client, database, settings, size):
    tenant = await make_tenant(database)
    content = (chat_file(400) * 2)[:size]
    assert len(content) == size
    error = assert_envelope(await upload(small_client, tenant, content), 413)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "file"
    assert str(SMALL_LIMIT) in error["message"]
    await assert_nothing_stored(small_client, tenant, settings)


async def test_upload_at_the_limit_is_accepted(small_client, database):
    tenant = await make_tenant(database)
    content = b"x" * SMALL_LIMIT
    created = await upload_ok(small_client, tenant, content, purpose="batch")
    assert created["bytes"] == SMALL_LIMIT


# ---------------------------------------------------------------- POST /v1/files/{id}/check


async def check(
    client: httpx.AsyncClient, tenant: Tenant, file_id: str, **body: Any
) -> httpx.Response:
    return await client.post(f"/v1/files/{file_id}/check", headers=tenant.headers, json=body)


async def test_check_reports_counts_tokens_and_billing(client, tenant):
    file_id = (await upload_ok(client, tenant, chat_file(12)))["id"]
    response = await check(client, tenant, file_id, method="supervised", model="gpt-4o-mini")
    assert response.status_code == 200, response.text
    report = response.json()

    assert report["object"] == "fine_tuning.file_check"
    assert report["method"] == "supervised"
    assert report["model"] == "gpt-4o-mini-2024-07-18"
    assert report["format"] == "chat"
    assert report["valid"] is True
    assert report["errors"] == [] and report["n_errors"] == 0
    assert report["n_examples"] == 12

    tokens = report["tokens_per_example"]
    assert 0 < tokens["min"] <= tokens["mean"] <= tokens["max"]
    assert tokens["min"] <= tokens["p95"] <= tokens["max"]
    assert tokens["min"] * 12 <= report["total_tokens"] <= tokens["max"] * 12
    assert report["billable_tokens"] == report["total_tokens"]  # nothing over the limit
    assert report["n_examples_over_limit"] == 0

    # n_epochs "auto": 12 examples * 3 epochs < 100, so 100 // 12 = 8 epochs.
    assert report["n_epochs"] == 8
    assert report["billed_tokens"] == report["billable_tokens"] * 8
    assert report["estimated_cost_usd"] == pytest.approx(report["billed_tokens"] / 1e6 * 3.00)


async def test_check_n_epochs_changes_billed_tokens(client, tenant):
    file_id = (await upload_ok(client, tenant, chat_file(12)))["id"]
    auto = (await check(client, tenant, file_id, method="supervised", model="gpt-4o-mini")).json()

    response = await check(
        client, tenant, file_id, method="supervised", model="gpt-4o-mini", n_epochs=2
    )
    assert response.status_code == 200, response.text
    two = response.json()
    assert two["n_epochs"] == 2
    assert two["billed_tokens"] == auto["billable_tokens"] * 2
    assert two["total_tokens"] == auto["total_tokens"]


async def test_check_n_epochs_on_first_check(client, tenant):
    """n_epochs is honoured on a file's first check too, not only on a cached report."""
    file_id = (await upload_ok(client, tenant, chat_file(12)))["id"]
    response = await check(
        client, tenant, file_id, method="supervised", model="gpt-4o-mini", n_epochs=5
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["n_epochs"] == 5
    assert report["billed_tokens"] == report["billable_tokens"] * 5


async def test_check_method_mismatch_is_invalid(client, tenant):
    file_id = (await upload_ok(client, tenant, chat_file()))["id"]
    response = await check(client, tenant, file_id, method="dpo", model="gpt-4o-mini")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is False
    assert report["method"] == "dpo"
    assert report["n_errors"] >= 1
    assert report["errors"][0]["code"] == "invalid_format_for_method"


FILES_BY_FORMAT = {
    "chat": chat_file(),
    "preference": jsonl([preference_example(i) for i in range(10)]),
    "reinforcement": jsonl([reinforcement_example(i) for i in range(10)]),
}
METHOD_FORMAT = {"supervised": "chat", "dpo": "preference", "reinforcement": "reinforcement"}
# A base model that accepts every method, so that only the file can be wrong.
ANY_METHOD_MODEL = BaseModelSpec(
    id="any-method-test-model",
    engine=FAKE,
    methods=ALL_METHODS,
    max_tokens_per_example=65_536,
    tokenizer="tiktoken:o200k_base",
    created=0,
)


@pytest.mark.parametrize(
    ("file_format", "method"),
    [
        (fmt, method)
        for fmt in FILES_BY_FORMAT
        for method, needed in METHOD_FORMAT.items()
        if needed != fmt
    ],
)
async def test_check_for_another_method_reports_the_format_mismatch(
    client, tenant, registry, file_format, method
):
    """Like job creation, the check names the mismatch instead of judging the lines by the
    other format's rules."""
    registry.add(ANY_METHOD_MODEL)
    file_id = (await upload_ok(client, tenant, FILES_BY_FORMAT[file_format]))["id"]
    response = await check(client, tenant, file_id, method=method, model=ANY_METHOD_MODEL.id)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is False
    assert report["format"] == file_format
    assert report["errors"][0]["code"] == "invalid_format_for_method"
    assert report["n_errors"] == 1, report["errors"]


async def test_check_for_a_method_the_model_cannot_train_is_400(client, tenant):
    """gpt-4o-mini has no reinforcement fine-tuning: say so, as job creation does."""
    file_id = (await upload_ok(client, tenant, FILES_BY_FORMAT["reinforcement"]))["id"]
    response = await check(client, tenant, file_id, method="reinforcement", model="gpt-4o-mini")
    error = assert_envelope(response, 400)
    assert error["param"] == "method"
    assert error["code"] == "unsupported_method"


async def test_check_preference_file_for_dpo_is_valid(client, tenant):
    content = jsonl([preference_example(i) for i in range(10)])
    file_id = (await upload_ok(client, tenant, content))["id"]
    response = await check(client, tenant, file_id, method="dpo", model="gpt-4o-mini")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is True
    assert report["format"] == "preference"
    assert report["n_examples"] == 10


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"method": "supervised", "model": "gpt-2-tiny"}, "model"),
        ({"method": "supervised"}, "model"),
        ({"method": "distillation", "model": "gpt-4o-mini"}, "method"),
        ({"method": "supervised", "model": "gpt-4o-mini", "n_epochs": 0}, "n_epochs"),
        ({"method": "supervised", "model": "gpt-4o-mini", "n_epochs": 51}, "n_epochs"),
        ({"method": "supervised", "model": "gpt-4o-mini", "seed": 1}, "seed"),
    ],
    ids=[
        "unknown-model",
        "no-model",
        "bad-method",
        "zero-epochs",
        "too-many-epochs",
        "unknown-field",
    ],
)
async def test_check_rejects_bad_bodies(client, tenant, body, param):
    file_id = (await upload_ok(client, tenant, chat_file()))["id"]
    error = assert_envelope(await check(client, tenant, file_id, **body), 400)
    assert error["param"] == param


async def test_check_of_a_non_training_file_is_refused(client, tenant):
    file_id = (await upload_ok(client, tenant, b"x", purpose="batch"))["id"]
    response = await check(client, tenant, file_id, method="supervised", model="gpt-4o-mini")
    assert assert_envelope(response, 400)["code"] == "invalid_file_purpose"


async def test_check_of_unknown_file_is_404(client, tenant):
    response = await check(
        client, tenant, "file-doesnotexist000000000000", method="supervised", model="gpt-4o-mini"
    )
    assert_envelope(response, 404)
