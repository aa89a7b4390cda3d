"""Domain errors. The HTTP edge maps them to problem+json; the domain never builds HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


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


class TooLarge(DomainError):
    status, title, slug = 413, "Payload too large", "too-large"


class Unauthenticated(DomainError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(DomainError):
    status, title, slug = 403, "Forbidden", "forbidden"
