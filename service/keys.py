"""API keys: created once, shown once, stored as a SHA-256 of the secret.

A key is ``ulk_<prefix>_<secret>``; the prefix finds the row, the secret's hash is
compared in constant time. Keys carry 256 bits of entropy, so a fast hash is the right
tool (a slow password hash would only cost latency on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import audit_log
from service.enums import Scope
from service.errors import InvalidInput
from service.schemas import Caller
from service.tables import ApiKey, Tenant

__all__ = [
    "Principal",
    "create_key",
    "authenticate",
    "get_or_create_tenant",
    "has_scope",
    "parse_scopes",
    "describe",
]

# Authenticated keys are remembered this long, so the hot path skips a query per request;
# a revoked key stops working within this many seconds.
CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's identity, tenant and scopes (never its secret)."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]


_cache: dict[str, tuple[Principal, float]] = {}
_cache_lock = threading.Lock()


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(raw: list[str]) -> list[str]:
    known = {scope.value for scope in Scope}
    unknown = [scope for scope in raw if scope not in known]
    if unknown or not raw:
        raise InvalidInput(f"unknown or missing scopes {unknown}; known: {sorted(known)}")
    return sorted(set(raw))


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session, *, tenant_name: str, scopes: list[str], name: str = "", secret: str = ""
) -> tuple[ApiKey, str]:
    """A new key (committed); returns the row and the plaintext, which is never stored."""
    tenant = get_or_create_tenant(session, tenant_name)
    prefix = secrets.token_hex(6)
    secret = secret or secrets.token_urlsafe(32)
    plaintext = f"ulk_{prefix}_{secret}"
    key = ApiKey(
        tenant_id=tenant.id,
        name=name,
        prefix=prefix,
        secret_sha256=_sha256(secret),
        scopes=parse_scopes(scopes),
    )
    session.add(key)
    session.flush()
    audit_log.append(
        session,
        tenant_id=tenant.id,
        action="api_key.created",
        subject_type="api_key",
        subject_id=key.id,
        payload={"prefix": prefix, "scopes": key.scopes, "name": name},
    )
    session.commit()
    return key, plaintext


def create_key_from_plaintext(
    session: Session, *, tenant_name: str, scopes: list[str], plaintext: str
) -> ApiKey:
    """Install an operator-chosen key (``UNLEARN_BOOTSTRAP_ADMIN_KEY``)."""
    if len(plaintext) < 16:
        raise InvalidInput("a bootstrap key must be at least 16 characters")
    tenant = get_or_create_tenant(session, tenant_name)
    prefix = _sha256(plaintext)[:12]
    key = ApiKey(
        tenant_id=tenant.id,
        name="bootstrap",
        prefix=prefix,
        secret_sha256=_sha256(plaintext),
        scopes=parse_scopes(scopes),
    )
    session.add(key)
    session.commit()
    return key


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == "ulk" and parts[1] and parts[2]:
        return parts[1], parts[2]
    return None


def cached(token: str) -> Principal | None:
    """The principal of a recently authenticated token, without touching the database."""
    with _cache_lock:
        entry = _cache.get(_sha256(token))
    return entry[0] if entry is not None and entry[1] > time.monotonic() else None


def authenticate(session: Session, token: str) -> Principal | None:
    principal = cached(token)
    if principal is not None:
        return principal
    parsed = _split(token)
    if parsed is not None:
        prefix, secret = parsed
    else:  # an operator-chosen bootstrap key
        prefix, secret = _sha256(token)[:12], token
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.secret_sha256, _sha256(secret)):
        return None
    principal = Principal(key.id, key.tenant_id, frozenset(key.scopes))
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[_sha256(token)] = (principal, time.monotonic() + CACHE_SECONDS)
    return principal


def forget_cached_keys() -> None:
    with _cache_lock:
        _cache.clear()


def has_scope(principal: Principal, scope: Scope) -> bool:
    return Scope.ADMIN in principal.scopes or scope in principal.scopes


def any_key_exists(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def describe(session: Session, principal: Principal) -> Caller:
    """The calling key as a client may see it (never its secret or hash)."""
    key = session.get(ApiKey, principal.key_id)
    tenant = session.get(Tenant, principal.tenant_id)
    assert key is not None and tenant is not None
    return Caller(
        key_id=key.id,
        key_name=key.name,
        tenant_id=tenant.id,
        tenant=tenant.name,
        scopes=sorted(principal.scopes),
    )
