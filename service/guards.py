"""Request guards applied before routing: a size cap on JSON bodies and no NUL characters.

Uploads (multipart) are capped by the files service as they stream; every other body is
refused past `FT_MAX_JSON_BYTES`, before it is parsed. NUL characters are refused in paths and
query strings because PostgreSQL cannot store them in text and SQLite would silently differ.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_envelope


class RequestGuardMiddleware:
    """Refuse oversized non-upload bodies (413) and NUL characters in the URL (400)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"").lower():
            await _refuse(scope, receive, send, 400, "The URL contains a NUL character.")
            return
        headers = Headers(scope=scope)
        if headers.get("content-type", "").startswith("multipart/form-data"):
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(scope, receive, send, 413, self._too_large())
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                # Raised inside the framework's body reading, which re-raises HTTP errors as is.
                raise HTTPException(413, detail=self._too_large())
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> str:
        return f"The request body is larger than the maximum of {self.max_body_bytes} bytes."


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    body: dict[str, Any] = error_envelope(message, "invalid_request_error")
    await JSONResponse(body, status_code=status)(scope, receive, send)
