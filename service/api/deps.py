"""Dependencies of the HTTP edge: a database session, the caller's key, scope checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Path, Query
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service import keys
from service.db import new_session
from service.enums import Scope
from service.errors import Forbidden, Unauthenticated
from service.keys import Principal
from service.pagination import DEFAULT_LIMIT, MAX_LIMIT


async def get_session() -> AsyncIterator[Session]:
    """A session per request. Opening one does no I/O, so it happens on the event loop;
    closing one that still holds a transaction (a read) returns its connection from a
    worker thread. Domain functions commit their own writes."""
    session = new_session()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]


async def current_key(
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    token = authorization.removeprefix("Bearer ").strip()
    key = keys.cached(token) or await run_in_threadpool(keys.authenticate, session, token)
    if key is None:
        raise Unauthenticated("unknown or revoked API key")
    return key


CurrentKey = Annotated[Principal, Depends(current_key)]


def require(scope: Scope):  # type: ignore[no-untyped-def]
    """A route dependency: the caller's key must carry ``scope`` (or ``admin``)."""

    async def check(key: CurrentKey) -> None:  # pure CPU: no thread-pool hop
        if not keys.has_scope(key, scope):
            raise Forbidden(f"this key lacks the {scope.value!r} scope")

    return Depends(check)


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
# Version numbers are database integers: larger values are simply unknown versions, but
# they are refused up front rather than overflowing a column.
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
DEFAULT_PAGE = DEFAULT_LIMIT
