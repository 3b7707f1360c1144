"""Cursor pagination by `after=<id>` and OpenAI's list envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidRequest
from service.wire import WireModel

T = TypeVar("T")
Row = TypeVar("Row", bound="Paginated")


class Paginated(Protocol):
    """A table row with a public `id` and an ordering `pk`."""

    pk: int | None
    id: str


class ListPage(WireModel, Generic[T]):
    """OpenAI's list envelope: `{object, data, has_more, first_id, last_id}`."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, items: Sequence[Any], *, has_more: bool = False) -> Self:
        """Wrap wire objects, filling first_id and last_id from their ids (an empty page keeps
        the envelope's defaults)."""
        ids = {"first_id": items[0].id, "last_id": items[-1].id} if items else {}
        return cls(data=list(items), has_more=has_more, **ids)


async def page(
    session: AsyncSession,
    table: type[Row],
    *,
    where: Sequence[ColumnElement[bool]],
    after: str | None,
    limit: int,
    descending: bool = True,
    cursor_param: str = "after",
) -> tuple[list[Row], bool]:
    """Return up to `limit` rows after the row with id `after`, and whether more follow.

    `where` must scope the query to the caller's project: the cursor is looked up with the
    same conditions, so another project's id is an unknown cursor.
    """
    pk = col(table.pk)
    stmt: Select[Any] = select(table).where(*where)
    if after is not None:
        cursor = (await session.exec(select(table.pk).where(table.id == after, *where))).first()
        if cursor is None:
            raise InvalidRequest(f"No object found with id '{after}'.", param=cursor_param)
        stmt = stmt.where(pk < cursor if descending else pk > cursor)
    stmt = stmt.order_by(pk.desc() if descending else pk.asc()).limit(limit + 1)
    rows = list((await session.exec(stmt)).all())  # type: ignore[call-overload]
    return rows[:limit], len(rows) > limit
