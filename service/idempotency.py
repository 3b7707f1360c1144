"""`Idempotency-Key` on POST requests: a repeat replays the first answer.

Keys are scoped to the API key that sent them, so a replay never hands one key's answer to
another. The same key with other parameters is refused with 409, and so is a repeat that arrives
while the first request is still being processed (a reservation older than
`IN_PROGRESS_LEASE_SECONDS`, left by a crash, is taken over). Answers that carry a secret (a new
API key's value) are never stored: those routes run without idempotency.

Bodies are hashed as they stream (uploads are never buffered); multipart boundaries, which
clients choose at random per attempt, are left out of the hash. Answers of 5xx, 409 and 429
are not kept, so retrying them runs the request again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, delete, select, update
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import bearer_token
from service.db import Database, json_column, pk_column
from service.errors import error_envelope
from service.projects.service import authenticate_key

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 1024 * 1024
# A request refused before its body was read (413, bad content type) is read to its end, up to
# this much, so its fingerprint covers the whole body and an identical retry is recognised.
MAX_DRAINED_BODY = 16 * 1024 * 1024
_UNSTORED = {409, 429}
IN_PROGRESS_LEASE_SECONDS = 30 * 60
# Routes whose answers hold a secret: never stored, so never replayed.
_SECRET_ANSWERS = re.compile(
    r"^/v1/(organization/projects/[^/]+/api_keys|fine_tuning/stream_tickets"
    r"|webhook_endpoints|webhook_endpoints/[^/]+/rotate_secret)/?$"
)
HEADER_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "description": "A repeat with the same key (per API key, for FT_IDEMPOTENCY_TTL_SECONDS) "
    "replays the first answer; the same key with other parameters, or while the first is "
    "running, is a 409.",
}


def honours_key(method: str, path: str) -> bool:
    """Say whether requests to `method path` (a route's path template) honour the header."""
    return method.upper() == "POST" and not _SECRET_ANSWERS.match(path)


_BOUNDARY = re.compile(rb"boundary=\"?([^\";]+)\"?", re.IGNORECASE)


class IdempotencyRecord(SQLModel, table=True):
    """The first answer given to a request with an Idempotency-Key."""

    __tablename__ = "idempotency_records"
    __table_args__ = (sa.UniqueConstraint("api_key_id", "key", name="uq_idempotency_api_key_key"),)

    pk: int | None = Field(default=None, sa_column=pk_column())
    api_key_id: str = Field(foreign_key="api_keys.id", ondelete="CASCADE")
    key: str = Field(max_length=MAX_KEY_LENGTH)
    request_hash: str = Field(default="", max_length=64)
    status_code: int | None = None
    response_body: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    response_headers: list[list[str]] | None = Field(
        default=None, sa_column=json_column("response_headers")
    )
    created_at: float


class _RequestHasher:
    """SHA-256 of a request's method, path, query and body, with multipart boundaries removed."""

    def __init__(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "").encode()
        match = _BOUNDARY.search(content_type)
        self._boundary = match.group(1) if match else b""
        self._pending = b""
        self._hash = hashlib.sha256()
        for part in (
            scope["method"].encode(),
            scope["path"].encode(),
            scope.get("query_string", b""),
            _BOUNDARY.sub(b"", content_type),
        ):
            self._hash.update(part + b"\0")

    def update(self, chunk: bytes) -> None:
        if not self._boundary:
            self._hash.update(chunk)
            return
        data = (self._pending + chunk).replace(self._boundary, b"")
        keep = len(self._boundary) - 1
        self._pending = data[-keep:] if keep else b""
        self._hash.update(data[: len(data) - len(self._pending)])

    def hexdigest(self) -> str:
        self._hash.update(self._pending)
        self._pending = b""
        return self._hash.hexdigest()


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class IdempotencyMiddleware:
    """ASGI middleware that makes POSTs with an Idempotency-Key safe to retry."""

    def __init__(self, app: ASGIApp, *, state: Any, ttl_seconds: float) -> None:
        self.app = app
        self.state = state
        self.ttl_seconds = ttl_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not honours_key(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        token = bearer_token(headers.get("authorization"))
        if key is None or token is None:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > MAX_KEY_LENGTH:
            await _send_json(
                send,
                400,
                error_envelope(
                    f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                    "invalid_request_error",
                    param="Idempotency-Key",
                    code="invalid_idempotency_key",
                ),
            )
            return
        database: Database = self.state.database
        async with database.session() as session:
            found = await authenticate_key(session=session, value=token)
        if found is None:
            await self.app(scope, receive, send)  # the route answers 401
            return
        api_key_id = found[0].id
        record = await self._claim(database, api_key_id, key)
        if record is not None:
            await self._replay(record, scope, receive, send)
            return
        await self._run_and_store(database, api_key_id, key, scope, receive, send)

    async def _claim(
        self, database: Database, api_key_id: str, key: str
    ) -> IdempotencyRecord | None:
        """Return the earlier record for the key, or reserve the key and return None."""
        async with database.session() as session:
            where = (
                col(IdempotencyRecord.api_key_id) == api_key_id,
                col(IdempotencyRecord.key) == key,
            )
            existing = (await session.exec(select(IdempotencyRecord).where(*where))).first()
            if existing is not None and self._still_valid(existing):
                return existing
            if existing is not None:
                await session.exec(delete(IdempotencyRecord).where(*where))
            session.add(IdempotencyRecord(api_key_id=api_key_id, key=key, created_at=time.time()))
            try:
                await session.commit()
            except IntegrityError:
                # A concurrent request reserved the key first: treat it as in progress.
                await session.rollback()
                return IdempotencyRecord(api_key_id=api_key_id, key=key, created_at=time.time())
        return None

    def _still_valid(self, record: IdempotencyRecord) -> bool:
        age = time.time() - record.created_at
        if record.status_code is None:  # in progress, unless its request died with a crash
            return age < IN_PROGRESS_LEASE_SECONDS
        return age < self.ttl_seconds

    async def _replay(
        self, record: IdempotencyRecord, scope: Scope, receive: Receive, send: Send
    ) -> None:
        hasher = _RequestHasher(scope)
        while True:
            message = await receive()
            hasher.update(message.get("body", b""))
            if not message.get("more_body", False) or message["type"] != "http.request":
                break
        if record.status_code is None:
            await _send_json(
                send,
                409,
                error_envelope(
                    "A request with this Idempotency-Key is still being processed; retry later.",
                    "invalid_request_error",
                    param="Idempotency-Key",
                    code="idempotency_request_in_progress",
                ),
            )
            return
        if record.request_hash != hasher.hexdigest():
            await _send_json(
                send,
                409,
                error_envelope(
                    "This Idempotency-Key was already used with other parameters; use a new key "
                    "for a different request.",
                    "invalid_request_error",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                ),
            )
            return
        stored = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in record.response_headers or []
        ]
        stored.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": record.status_code, "headers": stored})
        await send({"type": "http.response.body", "body": record.response_body or b""})

    async def _run_and_store(
        self,
        database: Database,
        api_key_id: str,
        key: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        hasher = _RequestHasher(scope)
        status: int | None = None
        kept_headers: list[list[str]] = []
        body = bytearray()
        request_read = False

        async def hashing_receive() -> Message:
            nonlocal request_read
            message = await receive()
            if message["type"] == "http.request":
                hasher.update(message.get("body", b""))
                request_read = not message.get("more_body", False)
            return message

        async def capturing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                kept_headers.extend(
                    [k.decode("latin-1"), v.decode("latin-1")]
                    for k, v in message.get("headers", [])
                    if k.lower() in (b"content-type", b"content-length")
                )
            elif message["type"] == "http.response.body" and len(body) <= MAX_STORED_BODY:
                body.extend(message.get("body", b""))
            await send(message)

        where = (col(IdempotencyRecord.api_key_id) == api_key_id, col(IdempotencyRecord.key) == key)
        try:
            await self.app(scope, hashing_receive, capturing_send)
            drained = 0
            while not request_read and drained <= MAX_DRAINED_BODY:
                message = await hashing_receive()
                if message["type"] != "http.request":
                    break  # the client went away
                drained += len(message.get("body", b""))
        finally:
            # A body that could not be read whole cannot be fingerprinted: the answer is not
            # kept, and a retry simply runs again.
            keep = status is not None and status < 500 and status not in _UNSTORED
            keep = keep and request_read and len(body) <= MAX_STORED_BODY
            async with database.session() as session:
                if keep:
                    await session.exec(
                        update(IdempotencyRecord)
                        .where(*where)
                        .values(
                            request_hash=hasher.hexdigest(),
                            status_code=status,
                            response_body=bytes(body),
                            response_headers=kept_headers,
                        )
                    )
                else:
                    await session.exec(delete(IdempotencyRecord).where(*where))
                await session.commit()
