"""Domain errors. The HTTP edge maps them to problem+json; the domain never builds HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DataError, StatementError

PROBLEM_TYPE_BASE = "https://unlearnd.dev/problems/"


def problem_body(status: int, title: str, detail: str, slug: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem: ``type``, ``title``, ``status``, ``detail`` and any extras."""
    return {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }


class DomainError(Exception):
    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """This error as a problem body (the HTTP edge answers it; ``:bulk`` lists it)."""
        return problem_body(self.status, self.title, self.detail, self.slug, **self.extra)


class NotFound(DomainError):
    status, title, slug = 404, "Not found", "not-found"

    def __init__(self, what: str, identifier: object) -> None:
        super().__init__(f"{what} {identifier!r} not found")


class Conflict(DomainError):
    status, title, slug = 409, "Conflict", "conflict"


class InvalidInput(DomainError):
    """422; ``errors`` is a list of ``{"loc": [...], "msg": "..."}``."""

    status, title, slug = 422, "Invalid input", "invalid-input"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any):
        super().__init__(detail, errors=errors or [{"loc": [], "msg": detail}], **extra)

    @classmethod
    def from_errors(cls, raw: Sequence[Mapping[str, Any]]) -> InvalidInput:
        """From pydantic's error list (a request body's or a bulk item's). Locations echo
        the client's own keys, which may not be encodable text: they are escaped."""
        errors = [
            {
                "loc": [p if isinstance(p, int) else printable(p) for p in e.get("loc", [])],
                "msg": printable(e.get("msg", "")),
            }
            for e in raw
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return cls(detail, errors)


class TooLarge(DomainError):
    status, title, slug = 413, "Payload too large", "too-large"


class Unavailable(DomainError):
    """503: a dependency (the database, the broker) failed; nothing was stored, the call may
    be retried, after ``retry_after`` seconds when given (a ``Retry-After`` header)."""

    status, title, slug = 503, "Service unavailable", "unavailable"

    def __init__(self, detail: str, *, retry_after: int | None = 5, **extra: Any) -> None:
        if retry_after is not None:
            extra["retry_after"] = retry_after
        super().__init__(detail, **extra)


class Unauthenticated(DomainError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(DomainError):
    status, title, slug = 403, "Forbidden", "forbidden"


def printable(value: object) -> str:
    """``value`` as text that always encodes (lone surrogates escaped)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def client_error(error: BaseException) -> DomainError | None:
    """The client's input behind a driver or codec error, as a 422; None when the error is
    the service's own. The one place that decides it (the HTTP edge and ``:bulk`` ask)."""
    cause = error.orig if isinstance(error, StatementError) else error
    if isinstance(error, DataError) or isinstance(cause, UnicodeError):
        # A value the database cannot hold (out of range, malformed) or cannot encode.
        reason = printable(cause).splitlines()[0][:200] if str(cause) else type(cause).__name__
        return InvalidInput("a value is out of range or malformed", [{"loc": [], "msg": reason}])
    return None
