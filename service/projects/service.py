"""Rules for projects and API keys: creation, lookup by key, and the bootstrap key."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import Conflict, InvalidRequest, NotFound
from service.ids import new_id, now, random_base62
from service.projects.models import ApiKey, Project

KEY_PREFIX = "sk-ft-"
DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only moment its clear value exists."""

    key: ApiKey
    value: str


def hash_key(value: str) -> str:
    """Return the stored digest of an API key."""
    # Keys carry 238 bits of randomness, so a fast hash is safe; no salt or KDF needed.
    return hashlib.sha256(value.encode()).hexdigest()


def redact(value: str) -> str:
    """Return a display form of a key that cannot be used to authenticate."""
    # Our keys start with a fixed prefix; a short custom key shows only its last characters.
    if value.startswith(KEY_PREFIX) and len(value) >= 32:
        return f"{value[: len(KEY_PREFIX) + 2]}...{value[-4:]}"
    return f"...{value[-2:]}"


async def create_project(*, session: AsyncSession, name: str) -> Project:
    """Create a project with a unique name."""
    project = Project(id=new_id("proj_"), name=name, created_at=now())
    session.add(project)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"A project named '{name}' already exists.", param="name") from None
    return project


async def list_projects(*, session: AsyncSession) -> list[Project]:
    """Return every project, oldest first."""
    return list((await session.exec(select(Project).order_by(col(Project.pk)))).all())


async def get_project(*, session: AsyncSession, project_id: str) -> Project:
    """Return a project by id, or raise NotFound."""
    project = (await session.exec(select(Project).where(Project.id == project_id))).first()
    if project is None:
        raise NotFound(f"No project found with id '{project_id}'.", param="project_id")
    return project


async def get_project_by_name(*, session: AsyncSession, name: str) -> Project | None:
    """Return the project called `name`, if any."""
    return (await session.exec(select(Project).where(Project.name == name))).first()


async def create_api_key(
    *,
    session: AsyncSession,
    project: Project,
    name: str,
    admin: bool,
    value: str | None = None,
) -> NewKey:
    """Create a key for `project`; a random value unless one is given (bootstrap)."""
    value = value or KEY_PREFIX + random_base62(40)
    if len(value) < 16:
        raise InvalidRequest("An API key must be at least 16 characters long.", param="value")
    key = ApiKey(
        id=new_id("key_"),
        project_id=project.id,
        name=name,
        key_hash=hash_key(value),
        redacted_value=redact(value),
        admin=admin,
        created_at=now(),
    )
    session.add(key)
    await session.commit()
    return NewKey(key=key, value=value)


async def authenticate_key(*, session: AsyncSession, value: str) -> tuple[ApiKey, Project] | None:
    """Return the key and project for a presented key value, or None."""
    digest = hash_key(value)
    row = (
        await session.exec(
            select(ApiKey, Project)
            .join(Project, col(Project.id) == col(ApiKey.project_id))
            .where(ApiKey.key_hash == digest)
        )
    ).first()
    # The lookup is by digest; compare again in constant time for defence in depth.
    if row is None or not hmac.compare_digest(row[0].key_hash, digest):
        return None
    return row[0], row[1]


async def ensure_bootstrap_key(*, session: AsyncSession, value: str) -> bool:
    """Create project `default` with an admin key of exactly `value` unless it exists."""
    if await authenticate_key(session=session, value=value) is not None:
        return False
    project = await get_project_by_name(session=session, name=DEFAULT_PROJECT)
    if project is None:
        project = await create_project(session=session, name=DEFAULT_PROJECT)
    await create_api_key(
        session=session, project=project, name="bootstrap", admin=True, value=value
    )
    return True


async def count_keys(*, session: AsyncSession) -> int:
    """Return how many API keys exist."""
    return (await session.exec(select(func.count()).select_from(ApiKey))).one()
