"""Schemas shared by every resource."""

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel

T = TypeVar("T")


def storable(value: str) -> str:
    """Text a database can hold: no NUL (Postgres refuses it in text columns, C-level file
    APIs truncate at it) and no lone surrogate (it has no UTF-8 encoding). Refused here,
    so neither reaches a driver as a 500."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (a lone surrogate is not)") from None
    return value


# Every client-supplied string that is stored, logged or used as a path.
Text = Annotated[str, AfterValidator(storable)]


DOCUMENTED_AS = "x-documented-as"  # service.api.openapi turns it into a $ref


def schema_ref(component: str, *, array: bool = False) -> Callable[[dict[str, Any]], None]:
    """A field's ``json_schema_extra`` that documents it as the OpenAPI component
    ``component`` (or an array of them): for a field taken loosely and checked later, item
    by item, or answered as built elsewhere (a problem body)."""

    def document(schema: dict[str, Any]) -> None:
        for loose in ("type", "items", "additionalProperties"):
            schema.pop(loose, None)
        marker = {DOCUMENTED_AS: component}
        schema.update({"type": "array", "items": marker} if array else marker)

    return document


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, object]] | None = None


class CallerRead(BaseModel):
    """Who a key is: clients (the admin dashboard) show only what its scopes allow."""

    key_id: str
    key_name: str
    tenant_id: str
    tenant: str
    scopes: list[str]
