"""Every error as ``application/problem+json`` (RFC 9457); never a 500 for client input."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException

from service.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
TYPE_BASE = "https://unlearnd.dev/problems/"


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    body = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **extra}
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(error.get("loc", [])), "msg": str(error.get("msg", ""))}
        for error in exc.errors()
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.slug, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _errors(exc)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem(422, "Invalid input", detail, "invalid-input", errors=errors)

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
