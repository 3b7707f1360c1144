"""Receive a multipart upload as it streams: to a temporary file, hashed, parsed line by line.

Nothing is held whole in memory: the file part goes straight to disk, and for purpose
`fine-tune` each chunk also feeds the JSON Lines parser, so a bad line is known as soon as the
upload ends. Parsing runs in a worker thread so a large upload never blocks the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from service.files.schemas import UPLOAD_FIELDS
from service.files.scratch import HeldFile
from service.training_data.formats import JsonlParser, ParseResult

MAX_FIELD_BYTES = 4096
# How the document describes a file part. A binary string alone is what openapi-python-client
# needs to send a file, but openapi-typescript types it `string`, which a Blob is not; the empty
# alternative makes it `unknown` there (a Blob or File passes `tsc --strict`) and leaves Python's
# `File` as it is.
FILE_PART_SCHEMA: dict[str, object] = {
    "anyOf": [{"type": "string", "format": "binary"}, {}],
    "description": "The file's bytes, sent as a file part (with its filename).",
}
# Room for the multipart framing around the content when checking Content-Length up front.
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class ReceivedUpload:
    """What a multipart upload carried, once fully received."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: Path | None = None
    size: int = 0
    sha256: str = ""
    parsed: ParseResult | None = None
    held: HeldFile | None = None

    def move_to(self, destination: Path) -> None:
        """Move the received content to its final place; it is then no longer temporary."""
        if self.path is None:
            raise ValueError("no content was received")
        self.path.replace(destination)
        self.path = None

    def discard(self) -> None:
        """Remove the temporary content file, if it is still there, and let go of it."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        if self.held is not None:
            self.held.release()
            self.held = None


class _Sink:
    """python-multipart callbacks that route each part to a field buffer or the content file."""

    def __init__(
        self,
        upload: ReceivedUpload,
        tmp_dir: Path,
        max_bytes: int,
        fields: frozenset[str] = UPLOAD_FIELDS,
        file_field: str = "file",
    ) -> None:
        self.upload = upload
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.fields = fields
        self.file_field = file_field
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._out: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._parser: JsonlParser | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._field_name = name
        # Unknown fields are refused before their content is read, so a client cannot make
        # the server buffer arbitrary many of them.
        if name not in self.fields:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {name}",
                param=name,
                code="unknown_parameter",
            )
        raw_filename = options.get(b"filename") or options.get(b"filename*")
        if raw_filename is None:
            return
        if name != self.file_field:
            raise InvalidRequest(f"Unexpected file part '{name}'.", param=name)
        if self.upload.path is not None:
            raise InvalidRequest("Only one file may be uploaded per request.", param=name)
        self.upload.filename = _clean_filename(raw_filename)
        # Held while this process receives it: a sweep removes it only once its process died.
        self.upload.held = HeldFile(self.tmp_dir, "upload")
        self.upload.path = self.upload.held.path
        self._out = self.upload.held.open()
        # The SDK sends `purpose` before the file; when a client sends it after, parse anyway.
        if (
            self.file_field == "file"
            and self.upload.fields.get("purpose", "fine-tune") == "fine-tune"
        ):
            self._parser = JsonlParser()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._out is None:
            self._field_value += chunk
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise InvalidRequest(
                    f"Field '{self._field_name}' is longer than {MAX_FIELD_BYTES} bytes.",
                    param=self._field_name,
                )
            return
        self.upload.size += len(chunk)
        if self.upload.size > self.max_bytes:
            raise PayloadTooLarge(
                f"File is larger than the maximum of {self.max_bytes} bytes.",
                param=self.file_field,
                code="file_too_large",
            )
        self._out.write(chunk)
        self._hash.update(chunk)
        if self._parser is not None:
            self._parser.feed(chunk)

    def on_part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self.upload.sha256 = self._hash.hexdigest()
            if self._parser is not None:
                self.upload.parsed = self._parser.finish()
                self._parser = None
        elif self._field_name is not None:
            if self._field_name in self.upload.fields:
                raise InvalidRequest(
                    f"Field '{self._field_name}' was given twice.", param=self._field_name
                )
            self.upload.fields[self._field_name] = self._field_value.decode("utf-8", "replace")

    @property
    def receiving_file(self) -> bool:
        """Whether the body stopped in the middle of the file part."""
        return self._out is not None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _clean_filename(raw: bytes) -> str:
    """Keep the base name of a client's filename, without control characters."""
    text = raw.decode("utf-8", "replace")
    if text.lower().startswith("utf-8''"):  # RFC 5987 `filename*`
        text = unquote(text[7:])
    text = "".join(ch for ch in text if ch.isprintable())
    return Path(text.replace("\\", "/")).name[:255] or "upload"


async def _chunks(request: Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """Yield the body's chunks; a client that stalls or goes away ends the upload."""
    stream = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(
                f"No upload data received for {idle_timeout:g} seconds.", code="upload_timeout"
            ) from None
        except ClientDisconnect:
            raise InvalidRequest(
                "The client closed the connection during the upload.", code="client_disconnected"
            ) from None
        yield chunk


async def receive_upload(
    request: Request,
    *,
    tmp_dir: Path,
    max_bytes: int,
    idle_timeout: float = 60.0,
    fields: frozenset[str] = UPLOAD_FIELDS,
    file_field: str = "file",
) -> AsyncIterator[ReceivedUpload]:
    """Receive the request's multipart body (the content in `file_field`, the other `fields`
    as text); the temporary file is removed afterwards unless it was moved into place."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            f"Uploads must be sent as multipart/form-data with a '{file_field}' part.",
            code="invalid_content_type",
        )
    declared = request.headers.get("content-length")
    if (
        declared
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes + MULTIPART_OVERHEAD
    ):
        raise PayloadTooLarge(
            f"File is larger than the maximum of {max_bytes} bytes.",
            param=file_field,
            code="file_too_large",
        )
    tmp_dir.mkdir(parents=True, exist_ok=True)
    upload = ReceivedUpload()
    sink = _Sink(upload, tmp_dir, max_bytes, fields, file_field)
    parser = MultipartParser(boundary, callbacks=sink.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in _chunks(request, idle_timeout):
            if chunk:
                await anyio.to_thread.run_sync(parser.write, chunk)
        parser.finalize()
        if sink.receiving_file:
            raise InvalidRequest("The multipart body ended inside the file part.", param=file_field)
        yield upload
    except MultipartParseError as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
    finally:
        sink.close()
        with contextlib.suppress(OSError):
            upload.discard()
