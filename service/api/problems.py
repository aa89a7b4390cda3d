"""Every error as ``application/problem+json`` (RFC 9457); never a 500 for client input."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException

from service.errors import DomainError, InvalidInput, problem_body

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def problem_response(body: dict[str, Any]) -> JSONResponse:
    retry_after = body.get("retry_after")
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM, headers=headers)


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    return problem_response(problem_body(status, title, detail, slug, **extra))


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return problem_response(exc.problem())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(InvalidInput.from_errors(exc.errors()).problem())

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, str(exc.detail), str(exc.detail), slug)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem(
            503,
            "Service unavailable",
            "the database is unreachable",
            "unavailable",
            retry_after=5,
        )

    @app.exception_handler(DataError)
    async def database_refused_value(_: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold (out of range, malformed): the client's input.
        return problem(
            422,
            "Invalid input",
            "a value is out of range or malformed",
            "invalid-input",
            errors=[{"loc": [], "msg": str(exc.orig)[:200]}],
        )

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return problem(
                503,
                "Service unavailable",
                "the database connection was lost",
                "unavailable",
                retry_after=5,
            )
        log.exception("database error")
        return problem(500, "Internal error", "an unexpected error occurred", "internal")
