"""Keyset pagination: ``?limit=&cursor=`` answering ``{"items", "next_cursor"}``."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.errors import InvalidInput
from service.tables import UTCDateTime

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def _encode(values: list[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _decode(cursor: str, count: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != count:
            raise ValueError
        return values
    except ValueError:
        raise InvalidInput(
            "malformed cursor", [{"loc": ["query", "cursor"], "msg": "malformed cursor"}]
        ) from None


def paginate(
    session: Session,
    statement: Select[Any],
    *,
    order: tuple[InstrumentedAttribute[Any], InstrumentedAttribute[Any]],
    limit: int,
    cursor: str | None,
    descending: bool = True,
) -> tuple[list[Any], str | None]:
    """Rows of ``statement`` ordered by the two ``order`` columns (the second unique)."""
    first, second = order
    if cursor:
        raw_first, raw_second = (_bounded(v) for v in _decode(cursor, 2))
        value = _parse_like(first, raw_first)
        if descending:
            after = or_(first < value, and_(first == value, second < raw_second))
        else:
            after = or_(first > value, and_(first == value, second > raw_second))
        statement = statement.where(after)
    ordering = (first.desc(), second.desc()) if descending else (first.asc(), second.asc())
    rows = list(session.scalars(statement.order_by(*ordering).limit(limit + 1)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, _encode([getattr(last, first.key), getattr(last, second.key)])


def _bounded(value: Any) -> Any:
    """Cursor values as the columns hold them: short strings, 32-bit integers."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput("malformed cursor")
    if isinstance(value, int) and not -(2**31) <= value < 2**31:
        raise InvalidInput("malformed cursor")
    if isinstance(value, str) and len(value) > 64:
        raise InvalidInput("malformed cursor")
    return value


def _parse_like(column: InstrumentedAttribute[Any], raw: Any) -> Any:
    if isinstance(raw, str) and isinstance(column.type, UTCDateTime):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidInput("malformed cursor") from None
    return raw
