"""Keyset pagination: ``?limit=&cursor=`` answering ``{"items", "next_cursor"}``."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, String, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.errors import InvalidInput
from service.schemas import storable
from service.tables import UTCDateTime

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_CURSOR_CHARS = 512  # ours are under 120; a longer one is not ours

Column = InstrumentedAttribute[Any]


def _encode(values: list[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _malformed() -> InvalidInput:
    return InvalidInput(
        "malformed cursor", [{"loc": ["query", "cursor"], "msg": "malformed cursor"}]
    )


def decode_cursor(cursor: str, columns: tuple[Column, ...]) -> list[Any]:
    """The cursor's values, each as its column holds it. A cursor is opaque to clients but
    not trusted: any value of the wrong type or range is a 422, never a database error."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise _malformed()
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, RecursionError):  # binascii, JSON and Unicode errors are ValueErrors
        raise _malformed() from None
    if not isinstance(values, list) or len(values) != len(columns):
        raise _malformed()
    return [_as_column_value(column, value) for column, value in zip(columns, values, strict=True)]


def _as_column_value(column: Column, raw: Any) -> Any:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        if not isinstance(raw, str):
            raise _malformed()
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise _malformed() from None
        if value.tzinfo is None:
            raise _malformed()
        return value
    if isinstance(kind, Integer):  # BigInteger is an Integer too
        bits = 63 if isinstance(kind, BigInteger) else 31
        if isinstance(raw, bool) or not isinstance(raw, int) or not -(2**bits) <= raw < 2**bits:
            raise _malformed()
        return raw
    if isinstance(kind, String):
        if not isinstance(raw, str) or len(raw) > (kind.length or 64):
            raise _malformed()
        try:
            return storable(raw)
        except ValueError:
            raise _malformed() from None
    raise TypeError(f"no cursor decoding for column type {kind!r}")  # a programming error


def paginate(
    session: Session,
    statement: Select[Any],
    *,
    order: tuple[Column, Column],
    limit: int,
    cursor: str | None,
    descending: bool = True,
) -> tuple[list[Any], str | None]:
    """Rows of ``statement`` ordered by the two ``order`` columns (the second unique)."""
    first, second = order
    if cursor:
        value, tie = decode_cursor(cursor, order)
        if descending:
            after = or_(first < value, and_(first == value, second < tie))
        else:
            after = or_(first > value, and_(first == value, second > tie))
        statement = statement.where(after)
    ordering = (first.desc(), second.desc()) if descending else (first.asc(), second.asc())
    rows = list(session.scalars(statement.order_by(*ordering).limit(limit + 1)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, _encode([getattr(last, first.key), getattr(last, second.key)])
