"""Schemas shared by every resource."""

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


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


class Caller(BaseModel):
    """Who a key is: clients (the admin dashboard) show only what its scopes allow."""

    key_id: str
    key_name: str
    tenant_id: str
    tenant: str
    scopes: list[str]
