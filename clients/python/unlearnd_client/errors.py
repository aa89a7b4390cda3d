"""The client's exceptions. An error answer of the service (``application/problem+json``,
RFC 9457) is raised as an :class:`ApiError`, the subclass its status names."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "RateLimited",
    "ServiceUnavailable",
    "TooLarge",
    "WaitTimeout",
    "error_for",
]


class ApiError(Exception):
    """An error answer: ``status``, and the problem body's ``title``, ``detail`` and
    (422) ``errors``; ``problem`` is the whole body, ``request_id`` the ``X-Request-ID``."""

    def __init__(self, status: int, problem: dict[str, Any], request_id: str | None) -> None:
        self.status = status
        self.problem = problem
        self.request_id = request_id
        self.type: str | None = problem.get("type")
        self.title: str = problem.get("title") or f"HTTP {status}"
        self.detail: str | None = problem.get("detail")
        self.errors: list[dict[str, Any]] = problem.get("errors") or []
        super().__init__(f"{status} {self.title}: {self.detail}" if self.detail else self.title)


class AuthenticationError(ApiError):
    """401: no key, or an unknown, revoked or expired one."""


class Forbidden(ApiError):
    """403: the key lacks the scope the operation needs."""


class NotFound(ApiError):
    """404: unknown, or another tenant's."""


class Conflict(ApiError):
    """409: the object's state does not allow this."""


class TooLarge(ApiError):
    """413: the body, or a list in it, is over its limit."""


class InvalidInput(ApiError):
    """422: ``errors`` lists each problem."""


class RateLimited(ApiError):
    """429, still after the client's retries."""


class ServiceUnavailable(ApiError):
    """503, still after the client's retries."""


class WaitTimeout(TimeoutError):
    """``wait_for`` (``wait_for_dataset``) gave up: the request (the dataset) had not
    reached a terminal status in time. ``request_id`` is the id waited for."""

    def __init__(
        self, request_id: str, status: str, seconds: float, *, what: str = "deletion request"
    ) -> None:
        self.request_id = request_id
        self.status = status
        super().__init__(f"{what} {request_id} still {status!r} after {seconds:g} s")


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidInput,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for(response: httpx.Response) -> ApiError:
    """The exception an error answer raises; a body that is not a JSON object (a proxy's
    HTML page) becomes a problem with the body's text as its detail."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {
            "title": response.reason_phrase,
            "status": response.status_code,
            "detail": response.text[:500],
        }
    kind = _BY_STATUS.get(response.status_code, ApiError)
    return kind(response.status_code, problem, response.headers.get("x-request-id"))
