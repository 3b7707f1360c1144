"""Model aliases: a stable name that a project's clients call (`email:department:sales`), moved
from one fine-tuned model to the next by promotion and back by rollback, with its history.

Chat completions and jobs accept an alias wherever they accept a model name.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import Conflict, InvalidRequest, NotFound
from service.ids import new_id, now
from service.models.models import AliasChange, ModelAlias

PREFIX = "email:"
# department:<name> or user:<id>; the alias is the prefix and the scope.
SCOPE = re.compile(r"^(?:department|user):[A-Za-z0-9_.@\-]{1,100}$")


def alias_of(scope: str) -> str:
    """Return the alias of a scope, or raise a 400 for a malformed scope."""
    if not SCOPE.match(scope):
        raise InvalidRequest(
            f"Invalid scope '{scope}': expected 'department:<name>' or 'user:<id>' "
            "(letters, digits, _ . @ -).",
            param="scope",
            code="invalid_scope",
        )
    return PREFIX + scope


def is_alias(name: str) -> bool:
    """Tell whether a model name is an alias."""
    return name.startswith(PREFIX)


async def find_alias(*, session: AsyncSession, project_id: str, alias: str) -> ModelAlias | None:
    """Return the project's alias row, or None."""
    return (
        await session.exec(
            select(ModelAlias).where(ModelAlias.project_id == project_id, ModelAlias.alias == alias)
        )
    ).first()


async def resolve_alias(*, session: AsyncSession, project_id: str, name: str) -> str:
    """Return the model an alias points at, or `name` itself when it is no alias."""
    if not is_alias(name):
        return name
    row = await find_alias(session=session, project_id=project_id, alias=name)
    if row is None:
        raise NotFound(
            f"The model alias '{name}' does not exist: no model was promoted for it yet.",
            param="model",
            code="model_not_found",
        )
    return row.model


async def list_aliases(*, session: AsyncSession, project_id: str) -> list[ModelAlias]:
    """Return the project's aliases by name."""
    rows = await session.exec(
        select(ModelAlias)
        .where(ModelAlias.project_id == project_id)
        .order_by(col(ModelAlias.alias))
    )
    return list(rows)


async def history(*, session: AsyncSession, project_id: str, alias: str) -> list[AliasChange]:
    """Return an alias's promotions and rollbacks, newest first."""
    rows = await session.exec(
        select(AliasChange)
        .where(AliasChange.project_id == project_id, AliasChange.alias == alias)
        .order_by(col(AliasChange.pk).desc())
    )
    return list(rows)


async def _move(
    session: AsyncSession,
    *,
    project_id: str,
    alias: str,
    model: str,
    action: str,
    reason: str | None,
    evaluation_id: str | None,
) -> ModelAlias:
    row = await find_alias(session=session, project_id=project_id, alias=alias)
    previous = row.model if row is not None else None
    if row is None:
        row = ModelAlias(project_id=project_id, alias=alias, model=model, updated_at=now())
    else:
        row.model, row.updated_at = model, now()
    session.add(row)
    session.add(
        AliasChange(
            id=new_id("aliaschg_"),
            project_id=project_id,
            alias=alias,
            action=action,
            model=model,
            previous_model=previous,
            reason=reason,
            evaluation_id=evaluation_id,
            created_at=now(),
        )
    )
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            f"The alias '{alias}' was changed meanwhile; retry.", code="concurrent_update"
        ) from None
    await session.refresh(row)
    return row


async def promote(
    *,
    session: AsyncSession,
    project_id: str,
    alias: str,
    model: str,
    reason: str | None = None,
    evaluation_id: str | None = None,
) -> ModelAlias:
    """Point an alias at `model` (already checked visible to the project) and record it."""
    return await _move(
        session,
        project_id=project_id,
        alias=alias,
        model=model,
        action="promote",
        reason=reason,
        evaluation_id=evaluation_id,
    )


async def rollback(
    *, session: AsyncSession, project_id: str, alias: str, reason: str | None = None
) -> ModelAlias:
    """Point an alias back at the model promoted before the current one (again and again)."""
    changes = await history(session=session, project_id=project_id, alias=alias)
    if not changes:
        raise NotFound(f"No such model alias: {alias}", param="scope")
    # Replay the history: a promotion pushes its model, a rollback pops the current one.
    promoted: list[str] = []
    for change in reversed(changes):
        if change.action == "promote":
            promoted.append(change.model)
        elif promoted:
            promoted.pop()
    if len(promoted) < 2:
        raise InvalidRequest(
            f"The alias '{alias}' has no earlier promotion to roll back to.",
            param="scope",
            code="nothing_to_roll_back",
        )
    previous = promoted[-2]
    return await _move(
        session,
        project_id=project_id,
        alias=alias,
        model=previous,
        action="rollback",
        reason=reason,
        evaluation_id=None,
    )
