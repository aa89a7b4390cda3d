"""Every error as ``application/problem+json`` (RFC 9457); never a 500 for client input."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from service.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    TooLarge,
    client_error,
    problem_body,
)

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM

    def render(self, content: Any) -> bytes:
        # ASCII escapes: a problem may echo client text that has no UTF-8 encoding.
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def problem_response(body: dict[str, Any]) -> JSONResponse:
    retry_after = body.get("retry_after")
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ProblemResponse(body, status_code=body["status"], headers=headers)


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    return problem_response(problem_body(status, title, detail, slug, **extra))


def unavailable(detail: str) -> JSONResponse:
    return problem(503, "Service unavailable", detail, "unavailable", retry_after=5)


def internal_error() -> JSONResponse:
    return problem(500, "Internal error", "an unexpected error occurred", "internal")


def answer_for(exc: Exception) -> JSONResponse | None:
    """The answer to an error that reached the edge: a domain error, a client's value the
    database refused (422), the database away (503); None for the service's own bugs."""
    if isinstance(exc, DomainError):
        return problem_response(exc.problem())
    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return unavailable("the database is unreachable")
    refused = client_error(exc)
    if refused is not None:
        return problem_response(refused.problem())
    if isinstance(exc, IntegrityError):
        # Two calls raced for one unique thing (a name, a model's one live job): the
        # loser's state check passed before the winner committed.
        log.warning("integrity conflict: %s", type(exc.orig).__name__)
        return problem_response(Conflict("a concurrent change conflicts with this one").problem())
    return None


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request, raised: str | None) -> str:
    """A 405's ``Allow`` (RFC 9110, 15.5.6): every method a route of this path takes.
    Starlette names only the first matching route's, and a path's methods are often split
    over several routes (``GET`` and ``POST /v1/models``), so each method is tried against
    the routes (mounts name their own, in ``raised``)."""
    methods = {method.strip() for method in (raised or "").split(",") if method.strip()}
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    for method in METHODS:
        probe: dict[str, Any] = {
            "type": "http",
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "method": method,
        }
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            methods.add(method)
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    @app.exception_handler(StatementError)
    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc)
        if answer is None:
            log.error("database error: %s", type(exc).__name__, exc_info=exc)
            return internal_error()
        return answer

    @app.exception_handler(UnicodeError)
    async def undecodable(_: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc)
        assert answer is not None
        return answer

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(InvalidInput.from_errors(exc.errors()).problem())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # The framework's only 400: a body it could not parse (invalid UTF-8, broken
            # multipart). The contract calls malformed input 422.
            return problem_response(
                InvalidInput("the body could not be parsed: " + str(exc.detail)).problem()
            )
        if exc.status_code == 413:
            return problem_response(TooLarge(str(exc.detail)).problem())
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        answer = problem(exc.status_code, str(exc.detail), str(exc.detail), slug)
        answer.headers.update(exc.headers or {})
        if exc.status_code == 405:
            answer.headers["Allow"] = _allowed_methods(request, answer.headers.get("Allow"))
        return answer

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug of ours: logged with its traceback (SQL parameters are hidden by the
        # engine), answered as problem+json like every other error.
        return internal_error()
