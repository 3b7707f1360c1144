"""Who is calling: the bearer key in `Authorization`, resolved to a project."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import AuthenticationFailed, PermissionDenied
from service.projects.models import ApiKey, Project
from service.projects.service import authenticate_key


@dataclass(frozen=True)
class Caller:
    """The authenticated key and the project it belongs to."""

    key: ApiKey
    project: Project

    @property
    def project_id(self) -> str:
        """The caller's project id, the scope of everything it may see."""
        return self.project.id

    def require_admin(self) -> None:
        """Raise PermissionDenied unless the key is an admin key."""
        if not self.key.admin:
            raise PermissionDenied(
                "This operation requires an admin API key.", code="admin_key_required"
            )


def bearer_token(authorization: str | None) -> str | None:
    """Extract the token from an `Authorization: Bearer <token>` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def authenticate(*, session: AsyncSession, authorization: str | None) -> Caller:
    """Resolve the Authorization header to a Caller, or raise AuthenticationFailed."""
    token = bearer_token(authorization)
    if token is None:
        raise AuthenticationFailed(
            "You didn't provide an API key. Provide it in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    found = await authenticate_key(session=session, value=token)
    if found is None:
        # Never echo the presented key, not even partly: it may be a real secret elsewhere.
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
    key, project = found
    return Caller(key=key, project=project)
