"""The OpenAPI document says what the service answers: every error as
``application/problem+json`` with the statuses each operation can give.

FastAPI documents successes from the routes; the errors come from layers it does not see
(the gate's 401/413/429, the problem handlers' 422/503, the scope checks' 403), so they are
added here, once, by rule:

- every ``/v1`` operation: 401 (no or bad key), 403 (a scope missing), 404 (unknown, or
  another tenant's), 429 (rate limited, with ``Retry-After``), 503 (database down, with
  ``Retry-After``);
- one that takes parameters or a body: 422;
- one that takes a body: 413;
- 409 where the route declares it (``conflict(...)``).

Every operation is named by its route function (``operationId`` ``create_deletion_request``,
unique across the document) and says the scope its key needs: ``x-required-scope`` and a
line of its description, read from the ``require(...)`` dependency that enforces it (or, for
a route that reads its key by hand, from ``read_by_hand``'s ``scope``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from service.api.deps import RequireScope
from service.api.examples import REQUEST_EXAMPLES
from service.api.method_params import document_method_params
from service.api.problems import PROBLEM
from service.enums import Scope
from service.schemas import DOCUMENTED_AS

__all__ = ["conflict", "read_by_hand", "install", "operation_id", "SCOPE_EXTENSION"]

SCOPE_EXTENSION = "x-required-scope"

DESCRIPTIONS = {
    401: "no API key, or an unknown, revoked or expired one",
    403: "the key lacks the scope this operation needs",
    404: "unknown, or another tenant's",
    409: "the object's state does not allow this",
    413: "the body, or a list in it, is over its limit",
    422: "invalid input (`errors` lists each problem)",
    429: "rate limited; retry after `Retry-After` seconds",
    503: "the database (or, for /readyz, the broker) is unreachable; retry after `Retry-After`",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}


def conflict(when: str) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` entry: it answers 409 ``when``."""
    return {409: {"description": when}}


_BY_HAND: dict[str, Any] = {}  # schemas of the bodies routes read by hand


def read_by_hand(
    body: type[BaseModel], headers: dict[str, dict[str, Any]], scope: Scope
) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its JSON body and its headers itself
    (``deps.authorized`` and ``deps.json_body``, solving no dependencies: the ingest path):
    they are documented as FastAPI documents a body model and ``Header`` parameters, and
    the route as one that needs the bearer key with ``scope`` (the route passes the same
    value to ``deps.authorized``)."""
    schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
    _BY_HAND.update(schema.pop("$defs", {}))
    _BY_HAND[body.__name__] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}
            },
        },
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": header}
            for name, header in headers.items()
        ],
        "security": [{"HTTPBearer": []}],
        SCOPE_EXTENSION: scope.value,
    }


def operation_id(route: routing.APIRoute) -> str:
    """The ``generate_unique_id_function`` of the app: a route's function name."""
    return route.name


def _scopes(dependant: Dependant) -> Iterator[Scope]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RequireScope):
            yield dependency.call.scope
        yield from _scopes(dependency)


def _required_scopes(routes: Iterable[Any]) -> dict[str, Scope]:
    """Each operation's (by ``operationId``) scope, from its ``RequireScope`` dependency."""
    contexts = getattr(routing, "iter_route_contexts", None)  # FastAPI's included routers
    found: dict[str, Scope] = {}
    for route in contexts(routes) if contexts is not None else routes:
        dependant = getattr(route, "dependant", None)
        if dependant is not None:
            scopes = set(_scopes(dependant))
            if len(scopes) > 1:
                raise RuntimeError(f"{route.unique_id} requires several scopes: {scopes}")
            if scopes:
                found[route.unique_id] = scopes.pop()
    return found


def _resolve_documented(node: Any) -> Any:
    """``service.schemas.schema_ref``'s markers, as ``$ref``s to their components."""
    if isinstance(node, list):
        return [_resolve_documented(item) for item in node]
    if not isinstance(node, dict):
        return node
    if DOCUMENTED_AS in node:
        kept = {key: node[key] for key in ("title", "description") if key in node}
        return {"$ref": f"#/components/schemas/{node[DOCUMENTED_AS]}", **kept}
    return {key: _resolve_documented(value) for key, value in node.items()}


def _document_example(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """The example of the operation's JSON body (``service.api.examples``), on the body
    and on its schema."""
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if media is None:
        return
    component = media["schema"].get("$ref", "").rsplit("/", 1)[-1]
    example = REQUEST_EXAMPLES.get(component)
    if example is not None:
        media["example"] = example
        schemas[component]["examples"] = [example]


def _document_scope(operation: dict[str, Any], scope: Scope | None) -> None:
    if scope is not None:
        operation.setdefault(SCOPE_EXTENSION, scope.value)
    named = operation.get(SCOPE_EXTENSION)
    line = (
        f"Required scope: `{named}` (or `admin`)."
        if named not in (None, Scope.ADMIN.value)
        else "Required scope: `admin`."
        if named
        else "Any valid API key."
    )
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{line}" if description else line


def _problem(status: int, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description or DESCRIPTIONS[status],
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def _document_errors(operation: dict[str, Any], *, guarded: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    statuses: set[int] = set()
    if guarded:
        statuses |= {401, 403, 404, 429, 503}
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    if operation.get("requestBody"):
        statuses.add(413)
    declared = {int(code): value for code, value in responses.items() if int(code) >= 400}
    statuses |= set(declared)
    for status in sorted(statuses):
        description = declared.get(status, {}).get("description")
        if status == 422:
            description = None  # FastAPI's own "Validation Error" is replaced by ours
        responses[str(status)] = _problem(status, description)


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
            webhooks=app.webhooks.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["Problem"] = PROBLEM_SCHEMA
        schemas.update(_BY_HAND)
        document["components"]["schemas"] = schemas = _resolve_documented(schemas)
        document_method_params(schemas)
        scopes = _required_scopes(app.routes)
        seen: set[str] = set()
        for path, operations in document.get("paths", {}).items():
            for operation in operations.values():
                name = operation["operationId"]
                if name in seen:  # two routes of one function name: rename one
                    raise RuntimeError(f"operationId {name!r} is used twice")
                seen.add(name)
                guarded = path.startswith("/v1/")
                _document_errors(operation, guarded=guarded)
                _document_example(operation, schemas)
                if guarded:
                    _document_scope(operation, scopes.get(name))
        for operations in document.get("webhooks", {}).values():
            for operation in operations.values():  # the receiver's answers, not ours
                operation["responses"] = {
                    "2XX": {"description": "received; any other answer is retried"}
                }
                _document_example(operation, schemas)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
