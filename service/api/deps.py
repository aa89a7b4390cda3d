"""Dependencies of the HTTP edge: a database session, the caller's key, scope checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.gate import CALLER
from service.db import new_session
from service.enums import Scope
from service.errors import Forbidden, Unauthenticated
from service.keys import service as keys
from service.keys.service import Caller
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
Body = TypeVar("Body", bound=BaseModel)


# Documents the scheme in /openapi.json; the gate has already authenticated the caller.
bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")


async def current_caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """The caller, authenticated by ``service.api.gate`` before any body was read."""
    return authorized(request)


def authorized(request: Request, scope: Scope | None = None) -> Caller:
    """The caller the gate authenticated; 403 unless its key carries ``scope`` (or
    ``admin``). A plain function, for the routes that solve no dependencies."""
    caller: Caller | None = request.scope.get("state", {}).get(CALLER)
    if caller is None:  # a /v1 route always passes the gate; this is belt and braces
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    if scope is not None:
        _check_scope(caller, scope)
    return caller


def _check_scope(caller: Caller, scope: Scope) -> None:
    if not keys.has_scope(caller, scope):
        raise Forbidden(f"this key lacks the {scope.value!r} scope")


CurrentCaller = Annotated[Caller, Depends(current_caller)]


class RequireScope:
    """The dependency ``require`` adds: it enforces ``scope``, and the OpenAPI document
    reads ``scope`` from it (``service.api.openapi``), so what is documented is what is
    checked."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, caller: CurrentCaller) -> None:  # pure CPU: no thread-pool hop
        _check_scope(caller, self.scope)


def require(scope: Scope):  # type: ignore[no-untyped-def]
    """A route dependency: the caller's key must carry ``scope`` (or ``admin``)."""
    return Depends(RequireScope(scope))


async def json_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as ``model``; on invalid input the same 422 as a body
    parameter's. For the routes that solve no dependencies."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as invalid:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in invalid.errors()]
        raise RequestValidationError(errors) from None


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
# Version numbers are database integers: larger values are simply unknown versions, but
# they are refused up front rather than overflowing a column.
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
DEFAULT_PAGE = DEFAULT_LIMIT
