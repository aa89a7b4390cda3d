"""The one tenant-scoped lookup: a row of another tenant is as unknown as a missing one
(the API contract: other tenants' objects answer 404, never 403)."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import NotFound

__all__ = ["get_or_raise"]


class TenantOwned(Protocol):
    id: Any
    tenant_id: Any


Row = TypeVar("Row", bound=TenantOwned)


def get_or_raise(
    session: Session,
    table: type[Row],
    identifier: str,
    *,
    tenant_id: str,
    what: str,
    lock: bool = False,
) -> Row:
    """The row of ``table`` with this id owned by ``tenant_id`` (locked when ``lock``);
    NotFound naming it ``what`` otherwise."""
    statement = select(table).where(table.id == identifier)  # type: ignore[arg-type]
    if lock:
        statement = statement.with_for_update()
    row = session.scalar(statement)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(what, identifier)
    return row
