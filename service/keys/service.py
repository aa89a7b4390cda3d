"""API keys: created once, shown once, stored as a SHA-256 of the secret; listed without
secrets, rotated (the old key keeps working for a grace period), revoked, and expiring.

A key is ``ulk_<prefix>_<secret>``; the prefix finds the row, the secret's hash is
compared in constant time. Keys carry 256 bits of entropy, so a fast hash is the right
tool (a slow password hash would only cost latency on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service import audit_log
from service.db import session_scope
from service.enums import Scope
from service.errors import Conflict, InvalidInput, NotFound
from service.keys.policy import DEVELOPMENT_KEYS, weakness
from service.keys.schemas import KeyRead
from service.pagination import paginate
from service.schemas import CallerRead
from service.settings import get_settings
from service.tables import ApiKey, Tenant, utcnow

__all__ = [
    "Caller",
    "create_key",
    "create_key_from_plaintext",
    "authenticate",
    "authenticate_token",
    "cached",
    "get_or_create_tenant",
    "has_scope",
    "parse_scopes",
    "list_page",
    "with_tenant_names",
    "get_or_raise",
    "revoke",
    "rotate",
    "stored_development_keys",
    "is_stored",
    "describe",
]

# Authenticated keys are remembered this long, so the hot path skips a query per request;
# a key revoked by another process stops working within this many seconds (at once in the
# process that revoked it).
CACHE_SECONDS = 10.0
# Whole-string match (``$`` would let a trailing newline through).
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_GRACE = timedelta(days=30)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's identity, tenant and scopes (never its secret)."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]


_cache: dict[str, tuple[Caller, float]] = {}
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
    if not TENANT_NAME.fullmatch(name):
        raise InvalidInput(
            "a tenant name is 1 to 100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    # One tenant whatever the case: `Acme` is the tenant `acme` (a unique index on
    # lower(name) holds it against a concurrent creation).
    tenant = session.scalar(select(Tenant).where(func.lower(Tenant.name) == name.lower()))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def _checked_expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must lie in the future")
    return expires_at


def _new_key(
    session: Session,
    *,
    tenant_id: str,
    scopes: list[str],
    name: str,
    expires_at: datetime | None,
    action: str = "api_key.created",
    **payload: Any,
) -> tuple[ApiKey, str]:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        tenant_id=tenant_id,
        name=name,
        prefix=prefix,
        secret_sha256=_sha256(secret),
        scopes=parse_scopes(scopes),
        expires_at=_checked_expiry(expires_at),
    )
    session.add(key)
    session.flush()
    audit_log.append(
        session,
        tenant_id=tenant_id,
        action=action,
        subject_type="api_key",
        subject_id=key.id,
        payload={"prefix": prefix, "scopes": key.scopes, "name": name, **payload},
    )
    return key, f"ulk_{prefix}_{secret}"


def create_key(
    session: Session,
    *,
    tenant_name: str | None = None,
    tenant_id: str | None = None,
    scopes: list[str],
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key (committed) of a tenant given by name (created if new: the CLI) or by id
    (an admin's own tenant); returns the row and the plaintext, which is never stored."""
    if tenant_id is None:
        tenant_id = get_or_create_tenant(session, tenant_name or "").id
    key, plaintext = _new_key(
        session, tenant_id=tenant_id, scopes=scopes, name=name, expires_at=expires_at
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
    key = ApiKey(
        tenant_id=tenant.id,
        name="bootstrap",
        prefix=_plaintext_prefix(plaintext),
        secret_sha256=_sha256(plaintext),
        scopes=parse_scopes(scopes),
    )
    session.add(key)
    session.commit()
    return key


def _plaintext_prefix(plaintext: str) -> str:
    return _sha256(plaintext)[:12]


def is_stored(session: Session, plaintext: str) -> bool:
    """Whether this operator-chosen key is installed (revoked or not)."""
    prefix = _plaintext_prefix(plaintext)
    return session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None


def stored_development_keys(session: Session) -> list[ApiKey]:
    """Unrevoked keys whose secret is a published development key."""
    prefixes = [_plaintext_prefix(k) for k in DEVELOPMENT_KEYS]
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.prefix.in_(prefixes), ApiKey.revoked_at.is_(None))
        )
    )


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == "ulk" and parts[1] and parts[2]:
        return parts[1], parts[2]
    return None


def cached(token: str) -> Caller | None:
    """The caller of a recently authenticated token, without touching the database."""
    with _cache_lock:
        entry = _cache.get(_sha256(token))
    return entry[0] if entry is not None and entry[1] > time.monotonic() else None


def authenticate_token(token: str) -> Caller | None:
    """:func:`authenticate` in a session of its own (the HTTP edge, before any route)."""
    with session_scope() as session:
        return authenticate(session, token)


def authenticate(session: Session, token: str) -> Caller | None:
    caller = cached(token)
    if caller is not None:
        return caller
    parsed = _split(token)
    if parsed is not None:
        prefix, secret = parsed
    else:  # an operator-chosen bootstrap key
        if get_settings().environment == "production" and weakness(token):
            return None  # a development or low-entropy key, stored before production
        prefix, secret = _plaintext_prefix(token), token
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        return None
    if not hmac.compare_digest(key.secret_sha256, _sha256(secret)):
        return None
    caller = Caller(key.id, key.tenant_id, frozenset(key.scopes))
    lifetime = CACHE_SECONDS
    if key.expires_at is not None:
        lifetime = min(lifetime, (key.expires_at - now).total_seconds())
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[_sha256(token)] = (caller, time.monotonic() + lifetime)
    return caller


def forget_cached_keys() -> None:
    with _cache_lock:
        _cache.clear()


def has_scope(caller: Caller, scope: Scope) -> bool:
    return Scope.ADMIN in caller.scopes or scope in caller.scopes


def any_key_exists(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def get_or_raise(
    session: Session, *, key_id: str, tenant_id: str | None = None, lock: bool = False
) -> ApiKey:
    """A key by id (within ``tenant_id`` when given: an admin sees its own tenant's only)."""
    statement = select(ApiKey).where(ApiKey.id == key_id)
    if lock:
        statement = statement.with_for_update()
    key = session.scalar(statement)
    if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
        raise NotFound("API key", key_id)
    return key


def list_page(
    session: Session, *, tenant_id: str | None, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    statement = select(ApiKey)
    if tenant_id is not None:
        statement = statement.where(ApiKey.tenant_id == tenant_id)
    return paginate(
        session, statement, order=(ApiKey.created_at, ApiKey.id), limit=limit, cursor=cursor
    )


def with_tenant_names(session: Session, *, tenant_name: str | None) -> list[tuple[ApiKey, str]]:
    """Every key (of the tenant called ``tenant_name``, if given) with its tenant's name,
    oldest first: the CLI's listing."""
    statement = select(ApiKey, Tenant.name).join(Tenant).order_by(ApiKey.created_at)
    if tenant_name:
        statement = statement.where(func.lower(Tenant.name) == tenant_name.lower())
    return [(key, name) for key, name in session.execute(statement)]


def _lasting_admin(key: ApiKey, now: datetime) -> bool:
    """An admin key that works and will not stop at the end of a rotation's grace (a
    development key, which production never authenticates, does not count there)."""
    if not (
        Scope.ADMIN in key.scopes
        and key.revoked_at is None
        and key.replaced_by is None
        and (key.expires_at is None or key.expires_at > now)
    ):
        return False
    development = {_plaintext_prefix(k) for k in DEVELOPMENT_KEYS}
    return get_settings().environment != "production" or key.prefix not in development


def revoke(session: Session, *, key_id: str, tenant_id: str | None = None) -> ApiKey:
    """Revoke a key now (revoking a revoked key changes nothing). A tenant's last lasting
    admin key is not revoked (409): nothing could manage the tenant's keys over HTTP after
    it. Create another admin key first, then revoke this one."""
    key = get_or_raise(session, key_id=key_id, tenant_id=tenant_id, lock=True)
    now = utcnow()
    if _lasting_admin(key, now):
        # Revocations of one tenant's keys queue here (FOR NO KEY UPDATE: a rotation's new
        # key, which only shares the tenant row through its foreign key, does not wait), so
        # two admins revoking each other's keys cannot leave the tenant with none.
        session.scalar(
            select(Tenant.id).where(Tenant.id == key.tenant_id).with_for_update(key_share=True)
        )
        others = session.scalars(
            select(ApiKey).where(
                ApiKey.tenant_id == key.tenant_id,
                ApiKey.id != key.id,
                ApiKey.revoked_at.is_(None),
                ApiKey.replaced_by.is_(None),
            )
        )
        if not any(_lasting_admin(other, now) for other in others):
            raise Conflict(
                "this is the tenant's last active admin key; create another admin key "
                "before revoking it"
            )
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit_log.append(
            session,
            tenant_id=key.tenant_id,
            action="api_key.revoked",
            subject_type="api_key",
            subject_id=key.id,
            payload={"prefix": key.prefix},
        )
    session.commit()
    forget_cached_keys()
    return key


def rotate(
    session: Session, *, key_id: str, grace: timedelta, tenant_id: str | None = None
) -> tuple[ApiKey, str]:
    """A new key with the old one's tenant, name, scopes and expiry; the old one keeps
    working for ``grace`` (so clients can switch without an outage), then expires."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInput(f"the grace period must be 0 to {MAX_GRACE.days} days")
    old = get_or_raise(session, key_id=key_id, tenant_id=tenant_id, lock=True)
    now = utcnow()
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise Conflict("a revoked or expired key cannot be rotated")
    if old.replaced_by is not None:
        raise Conflict(f"this key was already rotated (to {old.replaced_by})")
    new, plaintext = _new_key(
        session,
        tenant_id=old.tenant_id,
        scopes=list(old.scopes),
        name=old.name,
        expires_at=old.expires_at,
        action="api_key.rotated",
        replaces=old.id,
    )
    old.expires_at = min(now + grace, old.expires_at) if old.expires_at else now + grace
    old.replaced_by = new.id
    session.commit()
    forget_cached_keys()
    return new, plaintext


def status_of(key: ApiKey) -> Literal["active", "expired", "revoked"]:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


def to_read(key: ApiKey) -> KeyRead:
    return KeyRead(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=list(key.scopes),
        status=status_of(key),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        replaced_by=key.replaced_by,
    )


def describe(session: Session, caller: Caller) -> CallerRead:
    """The calling key as a client may see it (never its secret or hash)."""
    key = session.get(ApiKey, caller.key_id)
    tenant = session.get(Tenant, caller.tenant_id)
    assert key is not None and tenant is not None
    return CallerRead(
        key_id=key.id,
        key_name=key.name,
        tenant_id=tenant.id,
        tenant=tenant.name,
        scopes=sorted(caller.scopes),
    )
