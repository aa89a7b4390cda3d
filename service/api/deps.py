"""Dependencies of the HTTP edge: a database session, the caller's key, scope checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query
from sqlalchemy.orm import Session

from service import keys
from service.db import new_session
from service.enums import Scope
from service.errors import Forbidden, Unauthenticated
from service.pagination import DEFAULT_LIMIT, MAX_LIMIT
from service.tables import ApiKey


def get_session() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def current_key(
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ApiKey:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    key = keys.authenticate(session, authorization.removeprefix("Bearer ").strip())
    if key is None:
        raise Unauthenticated("unknown or revoked API key")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require(scope: Scope):  # type: ignore[no-untyped-def]
    """A route dependency: the caller's key must carry ``scope`` (or ``admin``)."""

    def check(key: CurrentKey) -> None:
        if not keys.has_scope(key, scope):
            raise Forbidden(f"this key lacks the {scope.value!r} scope")

    return Depends(check)


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
DEFAULT_PAGE = DEFAULT_LIMIT
