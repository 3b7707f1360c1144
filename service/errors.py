"""Errors in OpenAI's envelope `{"error": {message, type, param, code}}`, raised by services.

APIError                       any error with an HTTP status
 ├── InvalidRequest            400 invalid_request_error
 ├── AuthenticationFailed      401 authentication_error
 ├── PermissionDenied          403 permission_error
 ├── NotFound                  404 invalid_request_error
 ├── Conflict                  409 invalid_request_error (illegal transition, idempotency)
 ├── PayloadTooLarge           413 invalid_request_error
 ├── ServerError               500 server_error
 └── ServiceUnavailable        503 server_error (an upstream provider does not answer)
"""

from __future__ import annotations

from typing import Any, ClassVar

from service.wire import WireModel


class APIError(Exception):
    """An error that reaches the client as OpenAI's error envelope."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, Any]:
        """Return the JSON body for this error."""
        return error_envelope(self.message, self.error_type, param=self.param, code=self.code)


class InvalidRequest(APIError):
    """The request is malformed or breaks a rule (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(APIError):
    """No API key, or an unknown one (401)."""

    status_code = 401
    error_type = "authentication_error"


class PermissionDenied(APIError):
    """The key is valid but may not do this (403)."""

    status_code = 403
    error_type = "permission_error"


class NotFound(APIError):
    """No such object in the caller's project (404); other projects' objects look absent."""

    status_code = 404
    error_type = "invalid_request_error"


class RequestTimeout(APIError):
    """The client stopped sending the request body (408)."""

    status_code = 408
    error_type = "invalid_request_error"


class Conflict(APIError):
    """The request conflicts with the object's state (409)."""

    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLarge(APIError):
    """The upload is over the configured limit (413)."""

    status_code = 413
    error_type = "invalid_request_error"


class ServerError(APIError):
    """Something failed on our side (500); details are logged, never returned."""

    status_code = 500
    error_type = "server_error"


class ServiceUnavailable(APIError):
    """Something this service depends on (an upstream provider) does not answer (503)."""

    status_code = 503
    error_type = "server_error"


def error_envelope(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Build OpenAI's error body."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class ErrorDetail(WireModel):
    """The body of an error: a human message and machine-readable type, param and code."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(WireModel):
    """OpenAI's error envelope, used for every error status."""

    error: ErrorDetail
